"""The awq backend (gptqmodel's AWQ, AutoAWQ GEMM format) on tiny local models (no mocks, no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

pytest.importorskip("gptqmodel")

from quantkit import formats
from quantkit.backends.awq import Awq, AwqOptions, unpack_awq
from quantkit.backends.base import LoadOptions
from quantkit.errors import CalibrationError, InvalidOptionError, QuantkitError, UnsupportedModelError
from quantkit.formats import pickle_files
from quantkit.models import ModelSource
from quantkit.testing import logits, relative_error, tiny_corpus

from backend_io import load_with, save_with

BACKEND = Awq()
CAL = {"calibration": tiny_corpus(), "n_samples": 8, "seq_len": 64}
AUTOAWQ_KEYS = ("quant_method", "zero_point", "group_size", "bits", "version")


def quantize(path: Path, **options) -> nn.Module:
    return BACKEND.quantize(ModelSource(path=path), AwqOptions(**CAL, **options))


def save(model: nn.Module, folder: Path) -> Path:
    return save_with(BACKEND, model, folder)


def load(folder: Path, **options) -> nn.Module:
    return load_with(BACKEND, folder, **options)


@pytest.fixture(scope="module")
def llama_float(llama_dir):
    return AutoModelForCausalLM.from_pretrained(llama_dir)


@pytest.fixture(scope="module")
def llama_awq(llama_dir):
    return quantize(llama_dir, group_size=64)


@pytest.fixture(scope="module")
def awq_folder(llama_awq, tmp_path_factory):
    return save(llama_awq, tmp_path_factory.mktemp("awq") / "llama")


def test_missing_calibration_says_how_to_pass_it(llama_dir):
    with pytest.raises(CalibrationError, match=r"calibration="):
        BACKEND.quantize(ModelSource(path=llama_dir), AwqOptions())


@pytest.mark.parametrize("options", [{"bits": 3}, {"group_size": 256}, {"zero_point": "no"},
                                     {"dtype": "float32"}, {"skip": ["mlp.down_proj"]}])
def test_bad_options_are_refused(options):
    with pytest.raises(InvalidOptionError):
        AwqOptions(**options)


def test_gpt2_conv1d_is_refused_before_calibrating(gpt2_dir):
    with pytest.raises(UnsupportedModelError, match="Conv1D"):
        BACKEND.quantize(ModelSource(path=gpt2_dir), AwqOptions())


def test_quantizes_every_layer_in_half_precision(llama_awq, llama_float):
    layers = {n: m for n, m in llama_awq.named_modules() if n.endswith("_proj")}
    assert len(layers) == 14 and all(BACKEND.is_quantized_module(m) for m in layers.values())
    assert type(llama_awq.lm_head) is nn.Linear
    assert llama_awq.model.embed_tokens.weight.dtype == torch.bfloat16  # a float32 model runs in bf16
    assert relative_error(logits(llama_awq), logits(llama_float)) < 0.3  # about 0.16


def test_dequantized_weights_are_close_to_the_original(llama_awq, llama_float):
    # AWQ scales q/k/v's input channels and divides the preceding RMSNorm by the same factors
    norm = llama_awq.model.layers[0].input_layernorm.weight.detach().float()
    factors = llama_float.model.layers[0].input_layernorm.weight.detach() / norm
    linear = BACKEND.dequantize_module(llama_awq.model.layers[0].self_attn.q_proj, torch.float32)
    assert type(linear) is nn.Linear and linear.weight.shape == (128, 128)
    original = llama_float.model.layers[0].self_attn.q_proj.weight.detach()
    assert relative_error(linear.weight / factors, original) < 0.13  # about 0.10
    plain = BACKEND.dequantize(llama_awq)
    assert relative_error(logits(plain), logits(llama_awq)) < 0.015  # bf16 kernel vs bf16 weights


def test_saved_folder_is_autoawq_gemm_and_reloads_bit_exact(llama_awq, awq_folder):
    assert sorted(p.name for p in awq_folder.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "quantize_config.json"]
    assert pickle_files(awq_folder) == []
    qc = json.loads((awq_folder / "config.json").read_text())["quantization_config"]
    assert {k: qc[k] for k in AUTOAWQ_KEYS} == {"quant_method": "awq", "zero_point": True, "group_size": 64,
                                                "bits": 4, "version": "gemm"}
    assert torch.equal(logits(load(awq_folder)), logits(llama_awq))
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(awq_folder)), logits(llama_awq))


def test_loads_a_checkpoint_with_an_autoawq_config(llama_awq, awq_folder, tmp_path):
    folder = tmp_path / "autoawq"
    folder.mkdir()
    config = json.loads((awq_folder / "config.json").read_text())
    qc = config["quantization_config"]
    config["quantization_config"] = {**{k: qc[k] for k in AUTOAWQ_KEYS}, "modules_to_not_convert": None}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((awq_folder / "model.safetensors").read_bytes())
    assert formats.backend_for_folder(folder) is Awq
    model = load(folder)
    assert torch.equal(logits(model), logits(llama_awq))
    again = save(model, tmp_path / "again")
    saved = json.loads((again / "config.json").read_text())["quantization_config"]
    assert saved == config["quantization_config"]  # written back as it was read


def test_other_awq_packings_are_refused_by_name(awq_folder, tmp_path):
    config = json.loads((awq_folder / "config.json").read_text())
    config["quantization_config"]["version"] = "gemv"
    with pytest.raises(QuantkitError, match="'gemv' packing"):
        BACKEND.load(awq_folder, config, LoadOptions())


def test_without_zero_point(llama_dir, llama_float, tmp_path):
    model = quantize(llama_dir, zero_point=False)
    assert relative_error(logits(model), logits(llama_float)) < 0.35  # about 0.20
    folder = save(model, tmp_path / "q")
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["zero_point"] is False
    assert torch.equal(logits(load(folder)), logits(model))
    zeros = unpack_awq(model.model.layers[0].mlp.up_proj._quantkit_packed.tensors["qzeros"])
    assert torch.all(zeros == 8)  # symmetric groups: the zero point sits in the middle
