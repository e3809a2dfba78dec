"""AWQ (activation-aware weight quantization) through gptqmodel, saved in AutoAWQ's GEMM format.

AutoAWQ is deprecated upstream (last release 0.2.9); gptqmodel's AWQ produces the same checkpoints.
AWQ scales each layer's input channels by how strongly the calibration data activates them (the
scales are folded into the preceding norm or layer, so those float weights change too), then
quantizes the weights to 4 bits per group. Everything else (staging, loading through stock
transformers, saving from the packed tensors kept beside each layer) is shared with ``gptq``.

On disk (read by transformers, vLLM, AutoAWQ and gptqmodel): ``config.json`` with
``quantization_config = {"quant_method": "awq", "version": "gemm", "bits": 4, "group_size",
"zero_point", ...}`` and ``model.safetensors`` holding, per layer, ``qweight`` [in, out / 8] and
``qzeros`` [groups, out / 8] (int32, eight 4-bit values per word in AWQ's interleaved order
0 2 4 6 1 3 5 7), ``scales`` [groups, out] (float16) and ``bias``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from quantkit.backends.base import Capabilities
from quantkit.backends.gptq import (
    DEVICES,
    GptqModelBackend,
    Packed,
    check_bool,
    check_no_skip,
    source_dtype,
    unpack_bits,
)
from quantkit.calibration import CalibrationOptions
from quantkit.errors import InvalidOptionError, QuantkitError, UnsupportedModelError
from quantkit.models import ModelSource, conv1d_names
from quantkit.spec import check_choice

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # word nibble i holds column 8 * word + AWQ_ORDER[i]
UNDO_ORDER = [AWQ_ORDER.index(i) for i in range(8)]
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class AwqOptions(CalibrationOptions):
    """bits: 4 (the only width AWQ kernels take).   group_size: input features per scale and zero
    (32, 64 or 128).   zero_point: asymmetric groups with their own zero point (AWQ's default);
    False keeps the zero point in the middle.   dtype: float16 or bfloat16 (AWQ kernels compute in
    half precision; a float32 model is quantized in bfloat16, or float16 on a GPU)."""

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True

    def validate(self) -> None:
        super().validate()
        if isinstance(self.bits, bool):
            raise InvalidOptionError(f"awq: bits={self.bits!r} must be 4.")
        check_choice("awq", "bits", self.bits, (4,))
        if isinstance(self.group_size, bool):
            raise InvalidOptionError(f"awq: group_size={self.group_size!r} must be an int.")
        check_choice("awq", "group_size", self.group_size, (32, 64, 128))
        check_bool("awq", "zero_point", self.zero_point)
        check_no_skip("awq", self.skip)
        if self.dtype is not None and self.dtype not in HALF_DTYPES:
            raise InvalidOptionError(
                f"awq: dtype={str(self.dtype).removeprefix('torch.')} is not supported; AWQ kernels compute "
                "in float16 or bfloat16. Pass dtype='bfloat16' (CPU) or 'float16' (GPU), or leave it unset."
            )


class Awq(GptqModelBackend):
    name = "awq"
    aliases = ("autoawq",)
    description = ("AWQ through gptqmodel: activation-aware 4-bit weights fitted on calibration data; "
                   "AutoAWQ GEMM checkpoints (transformers, vLLM)")
    capabilities = Capabilities(
        bits=(4,), needs_calibration=True, on_the_fly=False, serializable=True, peft_trainable=True,
        devices=DEVICES, format="awq", stock_load=True,
    )
    options_type = AwqOptions
    packed_names = ("qweight", "qzeros", "scales", "bias")

    def quantize_config(self, options: AwqOptions) -> Any:
        from gptqmodel.quantization import FORMAT
        from gptqmodel.quantization.config import AWQConfig

        return AWQConfig(bits=options.bits, group_size=options.group_size, sym=not options.zero_point,
                         format=FORMAT.GEMM, device=options.device, offload_to_disk=False)

    def quantize_kwargs(self) -> dict[str, Any]:
        from gptqmodel.utils.backend import BACKEND

        return {"backend": BACKEND.AWQ_TORCH}  # gptqmodel's default AWQ packer (AWQ_GEMM) needs CUDA

    def compute_dtype(self, options: AwqOptions, source: ModelSource) -> torch.dtype:
        dtype = options.dtype or source_dtype(source)
        if dtype in HALF_DTYPES:
            return dtype
        return torch.float16 if options.device.startswith("cuda") else torch.bfloat16

    def check_source(self, config: Any) -> None:
        if conv1d_names(config):
            raise UnsupportedModelError(
                "awq: gptqmodel's AWQ cannot quantize GPT-2 style Conv1D layers (its scale search reads "
                "their weights transposed and fails). Use gptq for this model, or another method."
            )

    def check_format(self, quantization_config: dict[str, Any]) -> None:
        version = str(quantization_config.get("version") or quantization_config.get("format") or "gemm")
        if version.lower() != "gemm":
            raise QuantkitError(
                f"awq: this checkpoint uses AWQ's {version!r} packing; quantkit reads the GEMM packing "
                "(AutoAWQ's default, version 'gemm'). Convert it with gptqmodel or AutoAWQ first."
            )

    def unpack(self, packed: Packed) -> torch.Tensor:
        t = packed.tensors
        values = unpack_awq(t["qweight"])  # [in, out]
        zeros = unpack_awq(t["qzeros"])  # [groups, out]
        group_size = values.shape[0] // zeros.shape[0]
        scales = t["scales"].float().repeat_interleave(group_size, dim=0)
        weight = (values - zeros.repeat_interleave(group_size, dim=0)).float() * scales
        return weight.t().contiguous()

    @classmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        return quantization_config.get("quant_method") == "awq"


METHODS = [Awq]


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """4-bit values of an AWQ GEMM tensor, packed eight per int32 word along the columns."""
    values = unpack_bits(packed, 4, dim=1)
    return values.unflatten(1, (-1, 8))[:, :, UNDO_ORDER].flatten(1)
