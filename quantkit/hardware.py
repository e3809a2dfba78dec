"""What machine are we on? Detection, or a Hardware value written by hand."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

DEVICE_KINDS = ("cpu", "cuda", "rocm", "mps", "xpu")
# CPU features that decide which quantized kernels run fast (shown in summaries).
KEY_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
                 "neon", "asimd", "sve")


@dataclass(frozen=True)
class Hardware:
    """One machine: its accelerator (if any), its memory and its CPU.

    ``kind`` is one of ``cpu``, ``cuda``, ``rocm``, ``mps``, ``xpu``. ``memory_gb`` is the
    accelerator's memory (or RAM on a CPU-only machine); ``capability`` is the CUDA compute
    capability, e.g. ``(8, 0)`` for an A100.
    """

    kind: str = "cpu"
    name: str = ""
    capability: tuple[int, int] | None = None
    memory_gb: float | None = None
    ram_gb: float | None = None
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    cpu_count: int | None = None
    detected: bool = False

    @classmethod
    def cpu(cls, ram_gb: float | None = None, flags: tuple[str, ...] = ()) -> Hardware:
        return cls(kind="cpu", name=platform.processor() or "cpu", memory_gb=ram_gb,
                   ram_gb=ram_gb, cpu_flags=frozenset(flags))

    @classmethod
    def cuda(cls, capability: tuple[int, int] = (8, 0), memory_gb: float = 24.0,
             name: str = "") -> Hardware:
        return cls(kind="cuda", name=name or f"CUDA sm_{capability[0]}{capability[1]}",
                   capability=tuple(capability), memory_gb=memory_gb)

    @classmethod
    def rocm(cls, memory_gb: float = 64.0, name: str = "ROCm GPU") -> Hardware:
        return cls(kind="rocm", name=name, memory_gb=memory_gb)

    @classmethod
    def mps(cls, memory_gb: float = 16.0, name: str = "Apple GPU") -> Hardware:
        return cls(kind="mps", name=name, memory_gb=memory_gb)

    @classmethod
    def xpu(cls, memory_gb: float = 16.0, name: str = "Intel GPU") -> Hardware:
        return cls(kind="xpu", name=name, memory_gb=memory_gb)

    @property
    def device(self) -> str:
        """The torch device type for this hardware (ROCm uses ``cuda``)."""
        return "cuda" if self.kind == "rocm" else self.kind

    def __str__(self) -> str:
        parts = [f"{self.kind}: {self.name}" if self.name else self.kind]
        if self.capability:
            parts.append(f"capability {self.capability[0]}.{self.capability[1]}")
        if self.memory_gb is not None and self.kind != "cpu":
            parts.append(f"{self.memory_gb:.1f} GB")
        if self.ram_gb is not None:
            parts.append(f"RAM {self.ram_gb:.1f} GB")
        if self.cpu_count:
            parts.append(f"{self.cpu_count} CPU cores")
        simd = [f for f in KEY_CPU_FLAGS if f in self.cpu_flags]
        if simd:
            parts.append("CPU " + " ".join(simd))
        return ", ".join(parts)


def _ram_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset({"neon"}) if platform.machine() in ("arm64", "aarch64") else frozenset()


def detect() -> Hardware:
    """Detect the best accelerator torch can use here, with RAM and CPU features."""
    import torch

    common = dict(ram_gb=_ram_gb(), cpu_flags=_cpu_flags(), cpu_count=os.cpu_count(), detected=True)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        cap = None if kind == "rocm" else (props.major, props.minor)
        return Hardware(kind=kind, name=props.name, capability=cap,
                        memory_gb=round(props.total_memory / 2**30, 1), **common)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Hardware(kind="mps", name="Apple GPU", memory_gb=common["ram_gb"], **common)
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        props = torch.xpu.get_device_properties(0)
        return Hardware(kind="xpu", name=props.name,
                        memory_gb=round(props.total_memory / 2**30, 1), **common)
    return Hardware(kind="cpu", name=platform.processor() or platform.machine(),
                    memory_gb=common["ram_gb"], **common)


_detected: Hardware | None = None


def hardware() -> Hardware:
    """The machine quantkit runs on (detected once, then cached)."""
    global _detected
    if _detected is None:
        _detected = detect()
    return _detected
