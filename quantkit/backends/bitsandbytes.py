"""bitsandbytes: NF4 / FP4 4-bit and LLM.int8() 8-bit weights, quantized while transformers loads.

Quantization goes through transformers' ``BitsAndBytesConfig`` and ``from_pretrained``, so a saved
folder is a stock transformers checkpoint. bitsandbytes is imported inside methods only.
"""

from __future__ import annotations

import copy
import math
import tempfile
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from quantkit.backends.base import Backend, Capabilities, LoadOptions, float_dtype
from quantkit.errors import InvalidOptionError, UnsupportedModelError
from quantkit.models import ModelSource, empty_model, is_skipped, linear_layers
from quantkit.spec import Options

DEVICES = ("cpu", "cuda", "rocm", "xpu", "mps")


@dataclass
class Bnb4bitOptions(Options):
    """double_quant: also quantize the per-block scales (QLoRA's double quantization, about
    0.4 bit per weight less)."""

    double_quant: bool = True

    def validate(self) -> None:
        if not isinstance(self.double_quant, bool):
            raise InvalidOptionError(
                f"bitsandbytes 4-bit: double_quant={self.double_quant!r} is not supported; "
                "choose True or False."
            )


@dataclass
class BnbInt8Options(Options):
    """threshold: LLM.int8() outlier threshold; input features larger than this run in float16
    (0 turns the outlier path off)."""

    threshold: float = 6.0

    def validate(self) -> None:
        value = self.threshold
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise InvalidOptionError(
                f"bnb-int8: threshold={value!r} is not supported; use a number >= 0 (default 6.0, "
                "0 disables the float16 outlier path)."
            )
        self.threshold = float(value)


class _Bitsandbytes(Backend):
    """What the three bitsandbytes methods share; subclasses say how to build the config."""

    library = "bitsandbytes"
    requirement = "bitsandbytes>=0.45"
    module_class: ClassVar[str]     # "Linear4bit" or "Linear8bitLt"

    @abstractmethod
    def _config(self, options: Options, dtype: torch.dtype, skip: list[str]) -> Any:
        """The transformers ``BitsAndBytesConfig`` for ``options``."""

    @abstractmethod
    def _dequantized_weight(self, module: nn.Module) -> torch.Tensor:
        """``module``'s weight as floats, in nn.Linear orientation [out, in]."""

    # -- quantize -------------------------------------------------------------------------------
    def quantize(self, source: ModelSource, options: Options) -> nn.Module:
        self.require()
        from transformers import AutoModelForCausalLM

        dtype = options.dtype or source.dtype or _native_dtype(source)
        skip = _skipped_names(source, options.skip)
        config = self._config(options, dtype, skip)
        with tempfile.TemporaryDirectory(prefix="quantkit-bnb-") as tmp:
            folder = source.path
            if folder is None:  # bitsandbytes quantizes while loading, so load from a folder
                source.given.save_pretrained(tmp, safe_serialization=True)
                folder = tmp
            model = AutoModelForCausalLM.from_pretrained(
                folder, quantization_config=config, dtype=dtype, device_map=options.device,
                use_safetensors=True)
        self._check_quantized(model, skip)
        return model.eval()

    def _check_quantized(self, model: nn.Module, skip: list[str]) -> None:
        """Raise UnsupportedModelError if a linear layer not asked to stay float was left float
        (transformers converts only exact nn.Linear and Conv1D, not subclasses)."""
        keep = (*skip, *(getattr(model, "_keep_in_fp32_modules", None) or ()))
        layers = list(linear_layers(model, tuple(keep)))
        left = [name for name, module in layers if not self.is_quantized_module(module)]
        if not layers:
            raise UnsupportedModelError(f"{self.name}: this model has no linear layer to quantize.")
        if left:
            shown = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
            raise UnsupportedModelError(
                f"{self.name}: bitsandbytes left {len(left)} linear layer(s) in float ({shown}); it "
                "converts only nn.Linear and Conv1D layers. Add them to skip=... to keep them in "
                "float on purpose, or choose another method."
            )

    # -- layers ---------------------------------------------------------------------------------
    def is_quantized_module(self, module: nn.Module) -> bool:
        # Checked by class name first, so non-bitsandbytes layers never import the library.
        return type(module).__module__.startswith("bitsandbytes") and any(
            cls.__name__ == self.module_class for cls in type(module).__mro__)

    def dequantize_module(self, module: nn.Module, dtype: torch.dtype) -> nn.Linear:
        weight = self._dequantized_weight(module).to(dtype)
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device="meta")
        linear.weight = nn.Parameter(weight, requires_grad=False)
        if module.bias is not None:
            linear.bias = nn.Parameter(module.bias.detach().to(dtype).clone(), requires_grad=False)
        return linear

    # -- files ----------------------------------------------------------------------------------
    def save(self, model: nn.Module, folder: Path) -> None:
        restore_cpu_layout(model)
        model.save_pretrained(folder, safe_serialization=True)

    def load(self, folder: Path, config: dict[str, Any], options: LoadOptions) -> nn.Module:
        self.require()
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=options.dtype or "auto",
                                                     device_map=options.device, use_safetensors=True)
        return model.eval()


class _Bnb4bit(_Bitsandbytes):
    quant_type: ClassVar[str]       # "nf4" or "fp4"
    module_class = "Linear4bit"
    options_type = Bnb4bitOptions

    def _config(self, options: Bnb4bitOptions, dtype: torch.dtype, skip: list[str]) -> Any:
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
                                  bnb_4bit_use_double_quant=options.double_quant,
                                  bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skip)

    def is_quantized_module(self, module: nn.Module) -> bool:
        return super().is_quantized_module(module) and \
            getattr(module.weight, "quant_type", None) == self.quant_type

    def _dequantized_weight(self, module: nn.Module) -> torch.Tensor:
        from bitsandbytes.functional import dequantize_4bit

        return dequantize_4bit(*_standard_layout(module.weight))

    @classmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        qc = quantization_config
        return (qc.get("quant_method") == "bitsandbytes"
                and bool(qc.get("load_in_4bit") or qc.get("_load_in_4bit"))
                and qc.get("bnb_4bit_quant_type", "fp4") == cls.quant_type)


class BnbNf4(_Bnb4bit):
    name = "bnb-nf4"
    aliases = ("nf4", "bnb-4bit")
    description = ("bitsandbytes 4-bit NormalFloat (QLoRA): no calibration, quantized while loading; "
                   "the usual base for QLoRA fine-tuning")
    quant_type = "nf4"
    capabilities = Capabilities(bits=(4,), peft_trainable=True, devices=DEVICES,
                                min_cuda_capability=(6, 0), torch_compile=True, format="bitsandbytes")


class BnbFp4(_Bnb4bit):
    name = "bnb-fp4"
    aliases = ("fp4",)
    description = "bitsandbytes 4-bit float: like bnb-nf4 with a float grid; nf4 is usually more accurate"
    quant_type = "fp4"
    capabilities = Capabilities(bits=(4,), peft_trainable=True, devices=DEVICES,
                                min_cuda_capability=(6, 0), torch_compile=True, format="bitsandbytes")


class BnbInt8(_Bitsandbytes):
    name = "bnb-int8"
    aliases = ("llm-int8", "bnb-8bit")
    description = ("bitsandbytes LLM.int8(): 8-bit weights with float16 outlier features; "
                   "close to the float model at about half the memory of float16")
    module_class = "Linear8bitLt"
    options_type = BnbInt8Options
    # LLM.int8() quantizes activations too (row-wise int8), except the float16 outlier features.
    capabilities = Capabilities(bits=(8,), peft_trainable=True, devices=DEVICES,
                                min_cuda_capability=(7, 5), torch_compile=True, format="bitsandbytes",
                                activations="int8")

    def _config(self, options: BnbInt8Options, dtype: torch.dtype, skip: list[str]) -> Any:
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=options.threshold,
                                  llm_int8_skip_modules=skip)

    def _dequantized_weight(self, module: nn.Module) -> torch.Tensor:
        from bitsandbytes.functional import int8_vectorwise_dequant

        # The row scales live on the weight until the first forward pass, then on module.state.
        scales = getattr(module.weight, "SCB", None)
        if scales is None:
            scales = module.state.SCB
        return int8_vectorwise_dequant(module.weight.data, scales)

    @classmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        qc = quantization_config
        return qc.get("quant_method") == "bitsandbytes" and bool(
            qc.get("load_in_8bit") or qc.get("_load_in_8bit"))


METHODS = [BnbNf4, BnbFp4, BnbInt8]


# -- helpers --------------------------------------------------------------------------------------
def _native_dtype(source: ModelSource) -> torch.dtype:
    """The float dtype the source model was saved in (float32 when its config does not say)."""
    if source.given is not None:
        return float_dtype(source.given)
    dtype = getattr(source.config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _skipped_names(source: ModelSource, skip: tuple[str, ...]) -> list[str]:
    """Full names of the linear layers to keep in float: those ``skip`` names (quantkit's
    matching, not transformers' looser regex/suffix matching) plus the output head."""
    model = source.given if source.given is not None else empty_model(source.config)
    every = [name for name, _ in linear_layers(model)]
    names = [name for name in every if is_skipped(name, skip)]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names += [name for name, module in model.named_modules() if head is not None and module is head]
    return list(dict.fromkeys(names))


# On a CPU with AVX512-BF16, bitsandbytes (seen in 0.50.2) repacks each 4-bit weight in place on its
# first eval forward pass into the layout of its fast CPU kernel, with the scales rounded to bfloat16.
# Its own way back, run when saving, scrambles the scales without double quantization and re-quantizes
# them with it, so the saved model no longer computes what the live one did; dequantize_4bit() reads a
# packed weight as garbage. quantkit keeps the fast kernel and undoes the packing exactly instead.
def restore_cpu_layout(model: nn.Module) -> None:
    """Put 4-bit weights that bitsandbytes repacked for its CPU kernel back in the standard layout,
    keeping the scales the kernel used (unnested), so the model saves what it computes."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = _standard_layout(module.weight)
            module.weight.compress_statistics = False
            module.quant_state = module.weight.quant_state


def _standard_layout(weight: nn.Parameter) -> tuple[torch.Tensor, Any]:
    """A 4-bit weight's (data, quant_state) in bitsandbytes' standard layout, without changing it.

    For a weight repacked for the CPU kernel, the scales come back unnested, as the exact
    (bfloat16-rounded) values the kernel used."""
    state = weight.quant_state
    if not getattr(state, "packing_format_for_cpu", False):
        return weight.data, state
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    state = copy.deepcopy(state)
    absmax = state.absmax.t().reshape(-1).float()   # packed: [blocks per row, rows] in bfloat16
    data, state = _convert_weight_packed_for_cpu_inverse(weight.data.clone(), state)
    state.absmax, state.nested = absmax, False
    return data, state
