"""The gptq backend with the real gptqmodel on tiny local models (no mocks, no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForCausalLM

pytest.importorskip("gptqmodel")
pytest.importorskip("optimum")

from quantkit.backends.gptq import STOCK_FLAG, Gptq, GptqOptions, unpack_bits
from quantkit.errors import CalibrationError, InvalidOptionError, QuantkitError
from quantkit.formats import pickle_files
from quantkit.models import ModelSource, conv1d_type
from quantkit.testing import logits, relative_error, tiny_corpus, tiny_llama

from backend_io import load_with, save_with

BACKEND = Gptq()
CAL = {"calibration": tiny_corpus(), "n_samples": 8, "seq_len": 64}


def quantize(path: Path, **options) -> nn.Module:
    return BACKEND.quantize(ModelSource(path=path), GptqOptions(**CAL, **options))


def save(model: nn.Module, folder: Path) -> Path:
    return save_with(BACKEND, model, folder)


def load(folder: Path, **options) -> nn.Module:
    return load_with(BACKEND, folder, **options)


def proj_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if n.endswith("_proj")}


@pytest.fixture(scope="module")
def llama_float(llama_dir):
    return AutoModelForCausalLM.from_pretrained(llama_dir)


@pytest.fixture(scope="module")
def llama_4bit(llama_dir):
    return quantize(llama_dir, bits=4, group_size=64)


@pytest.fixture(scope="module")
def llama_folder(llama_4bit, tmp_path_factory):
    return save(llama_4bit, tmp_path_factory.mktemp("gptq") / "llama-4bit")


def test_missing_calibration_says_how_to_pass_it(llama_dir):
    with pytest.raises(CalibrationError, match=r"calibration=.*list of strings"):
        BACKEND.quantize(ModelSource(path=llama_dir), GptqOptions())


@pytest.mark.parametrize("options", [{"bits": 5}, {"bits": True}, {"group_size": 48}, {"desc_act": "yes"},
                                     {"sym": 1}, {"skip": ["model.layers.0.mlp.down_proj"]}])
def test_bad_options_are_refused(options):
    with pytest.raises(InvalidOptionError):
        GptqOptions(**options)


def test_bits_2_3_4_8_quantize_every_layer_and_error_falls_as_bits_rise(llama_dir, llama_float):
    reference = logits(llama_float)
    original = {n: m.weight.detach() for n, m in proj_layers(llama_float).items()}
    logit_errors, weight_errors = [], []
    for bits in (2, 3, 4, 8):
        model = quantize(llama_dir, bits=bits, group_size=64)
        layers = proj_layers(model)
        assert all(BACKEND.is_quantized_module(m) and m.bits == bits for m in layers.values())
        assert type(model.lm_head) is nn.Linear
        logit_errors.append(relative_error(logits(model), reference))
        dequantized = {n: BACKEND.dequantize_module(m, torch.float32).weight for n, m in layers.items()}
        errors = [relative_error(dequantized[n], w) for n, w in original.items()]
        weight_errors.append(sum(errors) / len(errors))
    assert logit_errors == sorted(logit_errors, reverse=True), logit_errors
    assert weight_errors == sorted(weight_errors, reverse=True), weight_errors
    assert weight_errors[2] < 0.16 and weight_errors[3] < 0.012, weight_errors  # 4-bit 0.13, 8-bit 0.008
    assert logit_errors[2] < 0.3 and logit_errors[3] < 0.02, logit_errors


def test_act_order_and_asymmetric(llama_dir, llama_float, tmp_path):
    model = quantize(llama_dir, bits=4, group_size=32, desc_act=True, sym=False)
    assert relative_error(logits(model), logits(llama_float)) < 0.3
    layer = model.model.layers[0].mlp.down_proj
    g_idx = layer._quantkit_packed.tensors["g_idx"]
    assert not torch.equal(g_idx, g_idx.sort().values)  # act-order permutes the groups
    folder = save(model, tmp_path / "q")
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert qc["desc_act"] is True and qc["sym"] is False and qc["group_size"] == 32
    assert torch.equal(logits(load(folder)), logits(model))


def test_saved_folder_is_standard_gptq_in_safetensors_and_json(llama_folder):
    names = sorted(p.name for p in llama_folder.iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors", "quantize_config.json"]
    assert pickle_files(llama_folder) == []
    qc = json.loads((llama_folder / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == "gptq"
    assert (qc["bits"], qc["group_size"], qc["desc_act"], qc["sym"]) == (4, 64, False, True)
    assert BACKEND.owns(qc) and BACKEND.stock_loadable(qc)
    with safe_open(llama_folder / "model.safetensors", framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    layer = "model.layers.0.mlp.up_proj"  # 128 -> 256
    assert shapes[f"{layer}.qweight"] == (16, 256) and shapes[f"{layer}.qzeros"] == (2, 32)
    assert shapes[f"{layer}.scales"] == (2, 256) and shapes[f"{layer}.g_idx"] == (128,)
    assert f"{layer}.weight" not in shapes and "lm_head.weight" in shapes


def test_stock_transformers_loads_the_same_model(llama_4bit, llama_folder):
    stock = AutoModelForCausalLM.from_pretrained(llama_folder)
    assert torch.equal(logits(stock), logits(llama_4bit))


def test_save_after_forward_writes_the_checkpoint_unchanged(llama_4bit, llama_folder, tmp_path):
    logits(llama_4bit)  # gptqmodel's CPU kernel repacks its buffers in place on the first forward
    layer = llama_4bit.model.layers[0].self_attn.q_proj
    assert layer.qweight.dtype == torch.uint8  # ATen's int4 layout, not GPTQ's int32 words
    again = save(llama_4bit, tmp_path / "again")
    first, second = llama_folder / "model.safetensors", again / "model.safetensors"
    with safe_open(first, "pt") as a, safe_open(second, "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118
    assert torch.equal(logits(load(again)), logits(llama_4bit))


def test_dequantize_unpacks_to_linear(llama_4bit, llama_float):
    layer = llama_4bit.model.layers[1].mlp.gate_proj
    linear = BACKEND.dequantize_module(layer, torch.bfloat16)
    assert type(linear) is nn.Linear and linear.weight.shape == (256, 128)
    assert linear.weight.dtype == torch.bfloat16 and linear.bias is None
    original = llama_float.model.layers[1].mlp.gate_proj.weight.detach()
    assert relative_error(linear.weight, original) < 0.16
    plain = BACKEND.dequantize(llama_4bit)
    assert all(type(m) is nn.Linear for m in proj_layers(plain).values())
    assert relative_error(logits(plain), logits(llama_4bit)) < 0.01  # the CPU kernel runs in bf16


def test_unpack_bits_reads_3_bit_values_across_word_boundaries():
    values = torch.arange(64).remainder(8).reshape(64, 1)  # 64 values = 6 words of a bit stream
    bits = ((values >> torch.arange(3)) & 1).flatten()
    words = (bits.reshape(-1, 32).long() << torch.arange(32)).sum(-1)
    packed = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).reshape(6, 1)
    assert torch.equal(unpack_bits(packed, 3, dim=0), values.to(torch.int32))


def test_gpt2_conv1d_layers_are_quantized_and_reload(gpt2_dir, tmp_path):
    model = quantize(gpt2_dir, bits=4, group_size=64)
    float_model = AutoModelForCausalLM.from_pretrained(gpt2_dir)
    assert relative_error(logits(model), logits(float_model)) < 0.2
    names = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    blocks = model.transformer.h
    assert all(BACKEND.is_quantized_module(block.get_submodule(n)) for block in blocks for n in names)
    assert model.lm_head.weight is model.transformer.wte.weight
    folder = save(model, tmp_path / "q")
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert qc["meta"][STOCK_FLAG] is False and not BACKEND.stock_loadable(qc)
    with pytest.raises(AttributeError):  # transformers 5.24's GPT-2 weight init meets a quantized c_proj
        AutoModelForCausalLM.from_pretrained(folder)
    reloaded = load(folder)
    assert torch.equal(logits(reloaded), logits(model))
    plain = BACKEND.dequantize(model)
    assert type(plain.transformer.h[0].mlp.c_fc) is conv1d_type()
    assert relative_error(logits(plain), logits(model)) < 0.01


def test_in_memory_model_without_tokenizer_calibrates_on_token_ids():
    model = tiny_llama()
    ids = torch.randint(0, 512, (8, 64), generator=torch.Generator().manual_seed(0))
    quantized = BACKEND.quantize(ModelSource(given=model), GptqOptions(calibration=ids, bits=8))
    assert relative_error(logits(quantized), logits(model)) < 0.02
    assert isinstance(model.model.layers[0].mlp.up_proj, nn.Linear)  # the caller's model is untouched


def test_model_loaded_elsewhere_cannot_be_saved_from_repacked_buffers(llama_folder, tmp_path):
    stock = AutoModelForCausalLM.from_pretrained(llama_folder)
    with pytest.raises(QuantkitError, match="qk.load"):
        save(stock, tmp_path / "q")
