"""The backend contract: declared capabilities plus quantize / save / load / dequantize."""

from __future__ import annotations

import copy
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from quantkit.errors import BackendNotInstalledError
from quantkit.hardware import Hardware
from quantkit.models import ModelSource, cast_to, restore_conv1d, set_module
from quantkit.spec import Options


@dataclass(frozen=True)
class Capabilities:
    """What a method can do, declared once; ``qk.methods()`` and the selector read it.

    bits: weight bit widths offered.   needs_calibration: wants calibration data.
    on_the_fly: quantizes while loading, no separate step.   serializable: saves and reloads.
    peft_trainable: adapters can be trained on top (QLoRA style).
    devices: device kinds with kernels (cpu, cuda, rocm, mps, xpu).
    min_cuda_capability: lowest CUDA compute capability, when on CUDA.
    torch_compile: works under torch.compile.   format: on-disk format name.
    stock_load: a saved folder loads with stock ``AutoModelForCausalLM.from_pretrained``.
    activations: activation precision (``"float"`` for weight-only methods).
    """

    bits: tuple[int, ...]
    needs_calibration: bool = False
    on_the_fly: bool = True
    serializable: bool = True
    peft_trainable: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    min_cuda_capability: tuple[int, int] | None = None
    torch_compile: bool = False
    format: str = ""
    stock_load: bool = True
    activations: str = "float"


@dataclass
class LoadOptions:
    """How to load a checkpoint: target device and the float dtype of unquantized parts."""

    device: str = "cpu"
    dtype: torch.dtype | None = None


class Backend(ABC):
    """One quantization method. Subclasses live in ``quantkit/backends/<library>.py`` and import
    their library lazily, inside methods, never at module level."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    library: ClassVar[str]          # import name, e.g. "bitsandbytes"
    requirement: ClassVar[str]      # pip requirement, e.g. "bitsandbytes>=0.45"
    capabilities: ClassVar[Capabilities]
    options_type: ClassVar[type[Options]] = Options

    # -- availability -------------------------------------------------------------------------
    @classmethod
    def pip_line(cls) -> str:
        return f'pip install "{cls.requirement}"'

    @classmethod
    def is_installed(cls) -> bool:
        return importlib.util.find_spec(cls.library) is not None

    @classmethod
    def require(cls) -> None:
        """Raise BackendNotInstalledError (with the pip line) unless the library is installed."""
        if not cls.is_installed():
            raise BackendNotInstalledError(cls.name, cls.library, cls.pip_line())

    @classmethod
    def unusable_reason(cls, hw: Hardware) -> str | None:
        """Why this method cannot run on ``hw`` (None when it can). Never imports the library."""
        caps = cls.capabilities
        if hw.kind not in caps.devices:
            return f"no {hw.kind} kernels (runs on {', '.join(caps.devices)})"
        need = caps.min_cuda_capability
        if hw.kind == "cuda" and need and hw.capability and tuple(hw.capability) < need:
            have = ".".join(map(str, hw.capability))
            return f"needs CUDA capability >= {need[0]}.{need[1]}, this GPU has {have}"
        return None

    # -- the contract ---------------------------------------------------------------------------
    @abstractmethod
    def quantize(self, source: ModelSource, options: Options) -> nn.Module:
        """Return a quantized transformers model made from ``source`` (never the caller's object)."""

    @abstractmethod
    def is_quantized_module(self, module: nn.Module) -> bool:
        """True for a layer this method has quantized."""

    @abstractmethod
    def dequantize_module(self, module: nn.Module, dtype: torch.dtype) -> nn.Linear:
        """The nn.Linear holding ``module``'s dequantized weight (and its bias)."""

    @abstractmethod
    def save(self, model: nn.Module, folder: Path) -> None:
        """Write the full checkpoint (config, weights, tokenizer files are copied by the api)
        into ``folder``, which exists and is empty. Safetensors and JSON only."""

    @abstractmethod
    def load(self, folder: Path, config: dict[str, Any], options: LoadOptions) -> nn.Module:
        """Load a checkpoint this backend owns (see ``owns``). No pickle."""

    @classmethod
    @abstractmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        """True if a config.json ``quantization_config`` was written by this method."""

    @classmethod
    def stock_loadable(cls, quantization_config: dict[str, Any]) -> bool:
        """Whether stock transformers loads a folder with this config (default: the capability)."""
        return cls.capabilities.stock_load

    # -- shared behaviour -----------------------------------------------------------------------
    def dequantize(self, model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
        """A plain float copy of ``model``: quantized layers become nn.Linear (Conv1D where the
        architecture has Conv1D), and no quantization state is left on the model or its config."""
        dtype = dtype or float_dtype(model)
        plain = copy.deepcopy(model)
        for name, module in list(plain.named_modules()):
            if name and self.is_quantized_module(module):
                set_module(plain, name, self.dequantize_module(module, dtype))
        restore_conv1d(plain)
        strip_quantization(plain)
        cast_to(plain, dtype)
        return plain


def float_dtype(model: nn.Module) -> torch.dtype:
    """The float dtype the model computes in: its config's dtype, else its first float param."""
    dtype = getattr(model.config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


def strip_quantization(model: nn.Module) -> None:
    """Remove every trace of quantization from a model so it saves as a plain float model."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    for attr in ("hf_quantizer", "quantization_method", "_quantkit"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    for attr in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit"):
        if attr in model.__dict__:
            setattr(model, attr, False)
