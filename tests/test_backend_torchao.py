"""torchao specifics, with real torchao on tiny local models: GPT-2 really quantized, int4 group
sizes, stock transformers loading (or refusing loudly), the portable CPU int4 format, no pickle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import quantkit as qk
from quantkit import registry
from quantkit.errors import InvalidOptionError, UnsupportedModelError
from quantkit.formats import pickle_files
from quantkit.models import conv1d_type
from quantkit.testing import logits, relative_error

pytest.importorskip("torchao")
from torchao.utils import TorchAOBaseTensor  # noqa: E402

METHODS = ("torchao-int8", "torchao-int8-dynamic", "torchao-int4", "torchao-fp8")
GPT2_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model_dirs):
    """Quantize and save each (method, arch) once: (model, folder)."""
    cache: dict = {}

    def get(method: str, arch: str):
        if (method, arch) not in cache:
            model = qk.quantize(model_dirs[arch], method)
            cache[method, arch] = model, qk.save(model, tmp_path_factory.mktemp("q") / "out")
        return cache[method, arch]

    return get


@pytest.mark.parametrize("method", METHODS)
def test_gpt2_conv1d_layers_are_really_quantized(method, saved):
    model, _ = saved(method, "gpt2")
    for i in range(model.config.n_layer):
        for layer in GPT2_LAYERS:
            module = model.get_submodule(f"transformer.h.{i}.{layer}")
            assert type(module) is nn.Linear and isinstance(module.weight, TorchAOBaseTensor), layer
    assert type(model.lm_head.weight) in (torch.Tensor, nn.Parameter)


def test_quantization_config_is_transformers_torchao_config(saved):
    model, folder = saved("torchao-int8", "llama")
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "torchao" and qc["modules_to_not_convert"] == ["lm_head"]
    assert qc["quant_type"]["default"]["_type"] == "Int8WeightOnlyConfig"
    assert model.config.quantization_config == qc


@pytest.mark.parametrize("method", METHODS)
def test_owns_tells_the_four_methods_apart(method, saved):
    _, folder = saved(method, "llama")
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert [name for name in METHODS if registry.get(name).owns(qc)] == [method]
    assert not registry.get(method).owns({"quant_method": "bitsandbytes", "load_in_4bit": True})


@pytest.mark.parametrize("method", ["torchao-int8", "torchao-int8-dynamic", "torchao-fp8"])
def test_stock_transformers_loads_llama_folder_exactly(method, saved):
    model, folder = saved(method, "llama")
    stock = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    assert isinstance(stock.model.layers[0].mlp.up_proj.weight, TorchAOBaseTensor)
    assert torch.equal(logits(stock), logits(model))


@pytest.mark.parametrize("method,arch", [("torchao-int8", "gpt2"), ("torchao-int4", "llama")])
def test_stock_transformers_refuses_quantkit_layouts_loudly(method, arch, saved):
    _, folder = saved(method, arch)
    assert not registry.get(method).stock_loadable(json.loads((folder / "config.json").read_text())
                                                    ["quantization_config"])
    with pytest.raises(ValueError, match="quantkit_conv1d_saved_as_linear|PrototypeInt4|metadata"):
        AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)


@pytest.mark.parametrize("method,arch", [("torchao-int8", "gpt2"), ("torchao-int4", "gpt2"),
                                         ("torchao-int4", "llama")])
def test_quantkit_load_rebuilds_linear_layers_and_dequantizes_to_conv1d(method, arch, saved):
    model, folder = saved(method, arch)
    loaded = qk.load(folder)
    assert torch.equal(logits(loaded), logits(model))
    plain = qk.dequantize(loaded)
    assert getattr(plain.config, "quantization_config", None) is None
    first = "transformer.h.0.attn.c_attn" if arch == "gpt2" else "model.layers.0.self_attn.q_proj"
    assert type(plain.get_submodule(first)) is (conv1d_type() if arch == "gpt2" else nn.Linear)
    assert relative_error(logits(plain), logits(model)) < 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_folder_holds_safetensors_and_json_only(method, saved):
    _, folder = saved(method, "gpt2")
    assert pickle_files(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "quantkit.json",
        "tokenizer.json", "tokenizer_config.json"]


def test_stock_loaded_model_dequantizes(saved):
    model, folder = saved("torchao-int8", "llama")
    plain = qk.dequantize(qk.load(folder))
    assert not hasattr(plain.config, "quantization_config")
    assert relative_error(logits(plain), logits(model)) < 1e-5


@pytest.mark.parametrize("group_size", [16, 48, 512])
def test_int4_group_size_must_be_a_supported_choice(group_size, llama_dir):
    with pytest.raises(InvalidOptionError, match="group_size"):
        qk.quantize(llama_dir, "torchao-int4", group_size=group_size)


def test_int4_group_size_256_has_no_cpu_kernel(llama_dir):
    with pytest.raises(InvalidOptionError, match="CPU"):
        qk.quantize(llama_dir, "torchao-int4", group_size=256)


def test_int4_names_layers_whose_shape_does_not_fit():
    config = LlamaConfig(vocab_size=64, hidden_size=96, intermediate_size=192, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(UnsupportedModelError, match="layers.0.self_attn.q_proj .96, 96.*skip="):
        qk.quantize(LlamaForCausalLM(config), "torchao-int4", group_size=64)


def test_int4_group_size_changes_the_scales(llama_dir):
    errors, float_logits = {}, logits(AutoModelForCausalLM.from_pretrained(llama_dir))
    for group_size in (32, 128):
        model = qk.quantize(llama_dir, "torchao-int4", group_size=group_size)
        assert model.model.layers[0].mlp.down_proj.weight.block_size == [1, group_size]
        errors[group_size] = relative_error(logits(model), float_logits)
    assert errors[32] < errors[128] < 0.3


def test_int4_cpu_checkpoint_holds_plain_4bit_values(saved):
    model, folder = saved("torchao-int4", "llama")
    layer = model.model.layers[0].mlp.up_proj
    with safe_open(folder / "model.safetensors", "pt") as f:
        packed = f.get_tensor("model.layers.0.mlp.up_proj._weight_qdata")
        scale_and_zero = f.get_tensor("model.layers.0.mlp.up_proj._weight_scale_and_zero")
    values = torch.stack((packed >> 4, packed & 15), dim=-1).reshape(layer.weight.shape).float()
    group = layer.weight.block_size[1]
    scale = scale_and_zero[..., 0].t().repeat_interleave(group, 1)
    zero = scale_and_zero[..., 1].t().repeat_interleave(group, 1)
    dequantized = registry.get("torchao-int4")().dequantize_module(layer, torch.float32).weight
    torch.testing.assert_close((values - 8) * scale + zero, dequantized)


def test_int4_cpu_checkpoint_loads_on_another_cpu_instruction_set(saved, tmp_path):
    """The in-memory packing differs between AVX2 and AVX512; the saved values must not."""
    _, folder = saved("torchao-int4", "llama")
    script = ("import sys, quantkit as qk; from quantkit.backends.torchao import flatten_state_dict; "
              "from safetensors.torch import save_file; "
              "t, _ = flatten_state_dict(qk.load(sys.argv[1]).state_dict()); save_file(t, sys.argv[2])")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2")
    subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "avx2.safetensors")],
                   check=True, env=env, cwd=Path(__file__).parent.parent)
    with (safe_open(folder / "model.safetensors", "pt") as a,
          safe_open(tmp_path / "avx2.safetensors", "pt") as b):
        for key in a.keys():  # noqa: SIM118 - safe_open has no iterator
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def test_load_refuses_another_dtype(saved):
    _, folder = saved("torchao-int8", "gpt2")
    with pytest.raises(InvalidOptionError, match="dtype"):
        qk.load(folder, dtype="bfloat16")


def test_is_quantized_module_is_false_for_plain_linear():
    backend = registry.get("torchao-int8")()
    assert not backend.is_quantized_module(nn.Linear(4, 4))
    assert not backend.is_quantized_module(nn.Embedding(4, 4))
