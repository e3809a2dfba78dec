"""Wall time and peak memory of a block of code: process peak RSS on CPU, max allocated on CUDA."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_bytes() -> int:
    """The process's resident set size now (Linux /proc; other systems: psutil if installed)."""
    if _STATUS.exists():
        return _status_kib("VmRSS") * 1024
    try:
        import psutil
    except ImportError:
        return _maxrss_bytes()
    return psutil.Process().memory_info().rss


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so the next peak starts low."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Measurement:
    """What ``measure`` saw: seconds, process peak RSS, CUDA peak allocated (None without CUDA)."""

    seconds: float = 0.0
    peak_rss_bytes: int = 0
    cuda_peak_bytes: int | None = None
    peak_is_process_lifetime: bool = False


class measure:  # noqa: N801 - used as a context manager, reads like a function
    """``with measure() as m: ...`` -> ``m.seconds``, ``m.peak_rss_bytes``, ``m.cuda_peak_bytes``.

    On Linux the kernel's peak-RSS counter is reset on entry (``/proc/self/clear_refs``), so the
    peak is that of the block. Elsewhere a sampling thread polls RSS every 5 ms (a short spike
    between samples can be missed); without psutil the process-lifetime peak is reported and
    ``peak_is_process_lifetime`` is set.
    """

    def __init__(self, release: bool = True):
        self.release = release
        self.result = Measurement()
        self._sampler: _Sampler | None = None
        self._start = 0.0

    def __enter__(self) -> Measurement:
        if self.release:
            release_memory()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if not _reset_peak_rss():
            self._sampler = _Sampler()
            self._sampler.start()
        self._start = time.perf_counter()
        return self.result

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.result.cuda_peak_bytes = torch.cuda.max_memory_allocated()
        self.result.seconds = time.perf_counter() - self._start
        if self._sampler is not None:
            self.result.peak_rss_bytes = self._sampler.stop()
            self.result.peak_is_process_lifetime = self._sampler.lifetime
        else:
            self.result.peak_rss_bytes = _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS of this process (Linux >= 4.0); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _STATUS.exists()


def _maxrss_bytes() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self.lifetime = False
        self._stop_event = threading.Event()
        try:
            import psutil  # noqa: F401
        except ImportError:
            self.lifetime = not _STATUS.exists()

    def run(self) -> None:
        while not self._stop_event.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return _maxrss_bytes() if self.lifetime else max(self.peak, rss_bytes())
