"""The hqq backend with the real hqq library on tiny local models (no mocks, no downloads)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM

pytest.importorskip("hqq")

import quantkit as qk
from quantkit.backends.hqq import META_KEY, WEIGHTS_FILE, Hqq, HqqOptions, group_problem
from quantkit.errors import InvalidOptionError, QuantkitError
from quantkit.formats import PICKLE_SUFFIXES
from quantkit.models import ModelSource, conv1d_type
from quantkit.testing import logits, relative_error, tiny_gpt2, tiny_llama

from backend_io import load_with, save_with

HERE = Path(__file__).parent
BACKEND = Hqq()


def quantize(model: nn.Module, **options) -> nn.Module:
    return BACKEND.quantize(ModelSource(given=model), HqqOptions(**options))


def save(model: nn.Module, folder: Path) -> Path:
    return save_with(BACKEND, model, folder)


def load(folder: Path, **options) -> nn.Module:
    return load_with(BACKEND, folder, **options)


@pytest.fixture(scope="module")
def gpt2():
    return tiny_gpt2()


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


@pytest.fixture(scope="module")
def gpt2_4bit(gpt2):
    return quantize(gpt2, bits=4)


@pytest.fixture(scope="module")
def gpt2_folder(gpt2_4bit, tmp_path_factory):
    return save(gpt2_4bit, tmp_path_factory.mktemp("hqq") / "gpt2-4bit")


def test_error_falls_as_bits_rise(gpt2):
    reference = logits(gpt2)
    weight = gpt2.transformer.h[0].mlp.c_fc.weight.detach().t()  # Conv1D holds [in, out]
    logit_errors, weight_errors = [], []
    for bits in (1, 2, 3, 4, 8):
        model = quantize(gpt2, bits=bits)
        layer = model.transformer.h[0].mlp.c_fc
        assert BACKEND.is_quantized_module(layer)
        assert layer.meta["nbits"] == bits
        logit_errors.append(relative_error(logits(model), reference))
        weight_errors.append(relative_error(layer.dequantize(), weight))
    assert logit_errors == sorted(logit_errors, reverse=True), logit_errors
    assert weight_errors == sorted(weight_errors, reverse=True), weight_errors
    assert weight_errors[3] < 0.12 and weight_errors[4] < 0.01  # 4-bit about 9 %, 8-bit under 1 %
    assert logit_errors[4] < 0.02


def test_llama_every_linear_quantized_and_caller_model_untouched(llama):
    model = quantize(llama, bits=4, axis=0, group_size=32)
    kinds = {type(m).__name__ for n, m in model.named_modules() if n.endswith("_proj")}
    assert kinds == {"HQQLinear"}
    assert isinstance(model.lm_head, nn.Linear)
    assert relative_error(logits(model), logits(llama)) < 0.3
    assert isinstance(llama.model.layers[0].mlp.down_proj, nn.Linear)
    assert getattr(llama.config, "quantization_config", None) is None


def test_skip_keeps_layer_in_float(gpt2):
    model = quantize(gpt2, bits=4, skip=["h.1.mlp.c_proj"])
    kept = model.transformer.h[1].mlp.c_proj
    assert type(kept) is conv1d_type()
    assert torch.equal(kept.weight, gpt2.transformer.h[1].mlp.c_proj.weight)
    assert BACKEND.is_quantized_module(model.transformer.h[0].mlp.c_proj)
    assert model.config.quantization_config["skip"] == ["lm_head", "h.1.mlp.c_proj"]


@pytest.mark.parametrize("options", [{"bits": 5}, {"bits": 4.0}, {"bits": True}, {"group_size": 0},
                                     {"group_size": 60}, {"group_size": -64}, {"axis": 2}])
def test_bad_options_are_refused(options):
    with pytest.raises(InvalidOptionError):
        HqqOptions(**options)


def test_group_size_not_dividing_a_layer_names_it_and_a_fix(llama):
    with pytest.raises(InvalidOptionError, match=r"q_proj.*128 input features.*group_size=64.*skip="):
        quantize(llama, bits=4, group_size=96)  # hidden size 128


def test_group_problem_catches_what_hqq_would_pack_wrongly():
    assert group_problem((256, 128), 64, 4, 1) is None
    assert "input features" in group_problem((256, 100), 64, 4, 1)
    assert "packing" in group_problem((3, 64), 64, 1, 1)  # 3 groups; 1-bit packs 8 at a time
    assert group_problem((3, 64), 64, 1, 0) is None  # axis 0: rows are the group size
    assert "weights" in group_problem((3, 7), 8, 4, 0)


def test_saved_folder_is_safetensors_and_json_only(gpt2_folder):
    names = sorted(p.name for p in gpt2_folder.iterdir())
    assert names == ["config.json", "generation_config.json", WEIGHTS_FILE]
    assert not [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    config = json.loads((gpt2_folder / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "quantkit-hqq" and qc["bits"] == 4 and qc["group_size"] == 64
    assert BACKEND.owns(qc) and not BACKEND.owns({"quant_method": "hqq"})
    with safe_open(gpt2_folder / WEIGHTS_FILE, framework="pt") as f:
        table = json.loads(f.metadata()[META_KEY])
        keys = set(f.keys())
    layer = table["layers"]["transformer.h.0.attn.c_attn"]
    assert layer["shape"] == [384, 128] and layer["packing"] == "4bit_u8"
    assert {f"transformer.h.0.attn.c_attn.{k}" for k in ("W_q", "scale", "zero", "bias")} <= keys
    assert "lm_head.weight" not in keys  # tied to the embeddings, stored once


def test_stock_transformers_refuses_the_folder_loudly(gpt2_folder):
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForCausalLM.from_pretrained(gpt2_folder)


def test_reload_is_bit_exact(gpt2_4bit, gpt2_folder):
    model = load(gpt2_folder)
    assert torch.equal(logits(model), logits(gpt2_4bit))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert BACKEND.is_quantized_module(model.transformer.h[1].attn.c_proj)


def test_reload_in_fresh_process_without_pickle_through_the_api(llama, tmp_path):
    model = qk.quantize(llama, "hqq", bits=3, dtype="bfloat16")
    folder = qk.save(model, tmp_path / "q")
    assert qk.inspect(folder).method == "hqq" and not qk.inspect(folder).stock_load
    out = tmp_path / "logits.safetensors"
    subprocess.run([sys.executable, str(HERE / "fresh_load.py"), str(folder), str(out), "quantkit"],
                   check=True, cwd=HERE.parent)
    assert torch.equal(load_file(out)["logits"], logits(model))


def test_load_with_another_dtype(gpt2_4bit, gpt2_folder):
    model = load(gpt2_folder, dtype=torch.bfloat16)
    assert model.transformer.wte.weight.dtype == torch.bfloat16
    assert model.transformer.h[0].mlp.c_fc.compute_dtype == torch.bfloat16
    assert relative_error(logits(model), logits(gpt2_4bit)) < 0.05


def test_tampered_layer_table_is_refused_not_evaluated(gpt2_folder, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text((gpt2_folder / "config.json").read_text())
    with safe_open(gpt2_folder / WEIGHTS_FILE, framework="pt") as f:
        metadata = f.metadata()
    table = json.loads(metadata[META_KEY])
    table["layers"]["transformer.h.0.attn.c_attn"]["compute_dtype"] = "__import__('os').getcwd()"
    metadata[META_KEY] = json.dumps(table)
    save_file(load_file(gpt2_folder / WEIGHTS_FILE), folder / WEIGHTS_FILE, metadata=metadata)
    with pytest.raises(QuantkitError, match="unsupported saved format"):
        load(folder)


def test_dequantize_gives_linear_weights_and_leaves_the_model_alone(gpt2_4bit):
    layer = gpt2_4bit.transformer.h[0].attn.c_attn
    linear = BACKEND.dequantize_module(layer, torch.float32)
    assert type(linear) is nn.Linear and linear.weight.shape == (384, 128)
    assert torch.equal(linear.weight, layer.dequantize()) and torch.equal(linear.bias, layer.bias)
    before = logits(gpt2_4bit)
    plain = BACKEND.dequantize(gpt2_4bit)
    assert type(plain.transformer.h[0].attn.c_attn) is conv1d_type()
    assert getattr(plain.config, "quantization_config", None) is None
    assert relative_error(logits(plain), before) < 1e-5
    assert torch.equal(logits(gpt2_4bit), before)
    assert torch.equal(logits(copy.deepcopy(gpt2_4bit)), before)
