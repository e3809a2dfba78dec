"""The code a user writes with each backend library directly, for the same quantization quantkit does.

Each ``Direct`` has ``quantize(model_dir, calibration_ids, work) -> model``, optionally ``save``
(when the library has its own format) and ``load(folder) -> model``; ``None`` where the library
offers no such path here, with the reason in the notes. Settings match quantkit's defaults
(bnb double quantization, hqq 4-bit g64 axis 1, torchao int4 g128, GPTQ/AWQ 4-bit g128), and
``lm_head`` is kept in float on both sides.

Upstream limits met on CPU (so some rows have no direct number): a model quantized with torchao's
``quantize_`` does not ``save_pretrained`` ("Attempted to access the data pointer on an invalid
python storage"), and through ``TorchAoConfig`` the CPU int4 tensor is refused ("Unsupported tensor
type"), so int4 has no direct save or load; gptqmodel's default AWQ packer raises "AWQ: CUDA is not
available" (the direct code passes ``backend=BACKEND.AWQ_TORCH``); on two cores gptqmodel's thread
pool needs ``GPTQMODEL_CPU_WORKERS=2``; compressed-tensors 0.20 alone computes no scales.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

Quantize = Callable[[Path, "torch.Tensor | None", Path], nn.Module]


@dataclass(frozen=True)
class Direct:
    """One method's direct path and what quantkit does differently (the notes)."""

    quantize: Quantize | None
    load: Callable[[Path], nn.Module] | None
    save: Callable[[nn.Module, Path], None] | None = None
    quantize_note: str = ""
    load_note: str = ""


def model_dtype(folder: Path) -> torch.dtype:
    """The float dtype a model folder's config.json declares (float32 when it does not say)."""
    config = json.loads((folder / "config.json").read_text())
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return getattr(torch, name.removeprefix("torch."))


def stock_load(folder: Path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype="auto", device_map="cpu")


def float_model(model_dir: Path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=model_dtype(model_dir), device_map="cpu")


# -- bitsandbytes: transformers quantizes while loading ---------------------------------------------
def bnb(**config: object) -> Quantize:
    def quantize(model_dir: Path, calibration: torch.Tensor | None, work: Path) -> nn.Module:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        dtype = model_dtype(model_dir)
        extra = {"bnb_4bit_compute_dtype": dtype} if config.get("load_in_4bit") else {}
        quantization_config = BitsAndBytesConfig(**config, **extra)
        return AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization_config,
                                                    dtype=dtype, device_map="cpu")
    return quantize


# -- hqq: its Hugging Face helper, its own (pickle) checkpoint ---------------------------------------
def hqq_quantize(model_dir: Path, calibration: torch.Tensor | None, work: Path) -> nn.Module:
    from hqq.core.quantize import BaseQuantizeConfig
    from hqq.models.hf.base import AutoHQQHFModel

    model = float_model(model_dir)
    AutoHQQHFModel.quantize_model(model, quant_config=BaseQuantizeConfig(nbits=4, group_size=64),
                                  compute_dtype=model_dtype(model_dir), device="cpu")
    return model


def hqq_save(model: nn.Module, folder: Path) -> None:
    from hqq.models.hf.base import AutoHQQHFModel

    AutoHQQHFModel.save_quantized(model, str(folder))


def hqq_load(folder: Path) -> nn.Module:
    from hqq.models.hf.base import AutoHQQHFModel

    return AutoHQQHFModel.from_quantized(str(folder), device="cpu", compute_dtype=model_dtype(folder))


# -- torchao: quantize_ on a loaded model --------------------------------------------------------------
def torchao(make_config: Callable[[], object]) -> Quantize:
    def quantize(model_dir: Path, calibration: torch.Tensor | None, work: Path) -> nn.Module:
        from torchao.quantization import quantize_

        model = float_model(model_dir)
        quantize_(model, make_config(),
                  filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and fqn != "lm_head")
        return model
    return quantize


def int8_weight_only() -> object:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def int4_cpu() -> object:
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=128)


# -- gptqmodel: GPTQ and AWQ (its README flow: load, quantize, save, load) ----------------------------
def gptqmodel_flow(make_config: Callable[[torch.dtype], object], awq: bool) -> Quantize:
    def quantize(model_dir: Path, calibration: torch.Tensor | None, work: Path) -> nn.Module:
        if (os.cpu_count() or 1) <= 2:
            os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # else its thread pool refuses to start
        from gptqmodel import GPTQModel
        from gptqmodel.utils.backend import BACKEND

        dtype = model_dtype(model_dir)
        if awq and dtype not in (torch.float16, torch.bfloat16):
            dtype = torch.bfloat16  # AWQ kernels compute in half precision
        rows = [{"input_ids": r.tolist(), "attention_mask": [1] * r.numel()} for r in calibration]
        model = GPTQModel.load(str(model_dir), make_config(dtype), dtype=dtype)
        model.quantize(rows, calibration_data_min_length=1, **({"backend": BACKEND.AWQ_TORCH} if awq else {}))
        with tempfile.TemporaryDirectory(dir=work, ignore_cleanup_errors=True) as tmp:
            model.save(tmp)
            del model
            return GPTQModel.load(tmp, device="cpu")
    return quantize


def gptq_config(dtype: torch.dtype) -> object:
    from gptqmodel import QuantizeConfig

    return QuantizeConfig(bits=4, group_size=128, desc_act=False, sym=True, device="cpu",
                          offload_to_disk=False)


def awq_config(dtype: torch.dtype) -> object:
    from gptqmodel.quantization import FORMAT
    from gptqmodel.quantization.config import AWQConfig

    return AWQConfig(bits=4, group_size=128, sym=False, format=FORMAT.GEMM, device="cpu",
                     offload_to_disk=False)


def gptqmodel_load(folder: Path) -> nn.Module:
    if (os.cpu_count() or 1) <= 2:
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    from gptqmodel import GPTQModel

    return GPTQModel.load(str(folder), device="cpu")


BNB_QUANTIZE_NOTE = "same from_pretrained; quantkit also names skipped layers on a meta skeleton"
GPTQMODEL_QUANTIZE_NOTE = "both load, quantize, save, reload (gptqmodel's in-memory model is wrong on CPU)"
GPTQMODEL_LOAD_NOTE = "direct: GPTQModel.load; quantkit: from_pretrained, then re-reads the packed tensors"

DIRECT: dict[str, Direct] = {
    "bnb-nf4": Direct(bnb(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
                      stock_load, quantize_note=BNB_QUANTIZE_NOTE, load_note="same loader, same folder"),
    "bnb-int8": Direct(bnb(load_in_8bit=True), stock_load, quantize_note=BNB_QUANTIZE_NOTE,
                       load_note="same loader, same folder"),
    "hqq": Direct(hqq_quantize, hqq_load, hqq_save,
                  quantize_note="direct: AutoHQQHFModel (gc.collect x3); quantkit also checks group sizes",
                  load_note="direct: hqq's pickle format (qmodel.pt); quantkit: its safetensors format"),
    "torchao-int8": Direct(torchao(int8_weight_only), stock_load, quantize_note="same quantize_",
                           load_note="same folder; direct: stock from_pretrained"),
    "torchao-int4": Direct(torchao(int4_cpu), None, quantize_note="same quantize_ (CPU int4 layout)",
                           load_note="no direct path: torchao cannot serialize its CPU int4 tensor"),
    "gptq": Direct(gptqmodel_flow(gptq_config, awq=False), gptqmodel_load,
                   quantize_note=GPTQMODEL_QUANTIZE_NOTE, load_note=GPTQMODEL_LOAD_NOTE),
    "awq": Direct(gptqmodel_flow(awq_config, awq=True), gptqmodel_load,
                  quantize_note=GPTQMODEL_QUANTIZE_NOTE + "; direct needs backend=AWQ_TORCH on CPU",
                  load_note=GPTQMODEL_LOAD_NOTE),
    "ct-w4a16": Direct(None, stock_load,
                       quantize_note="no direct path: compressed-tensors 0.20 computes no scales "
                                     "(llm-compressor does; not installed)",
                       load_note="quantkit decompresses every layer while loading; stock at the 1st forward"),
}
