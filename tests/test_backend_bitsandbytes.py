"""bitsandbytes backend: what is specific to it, with the real library on tiny local models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("bitsandbytes")

from quantkit.backends.base import LoadOptions  # noqa: E402
from quantkit.backends.bitsandbytes import (  # noqa: E402
    Bnb4bitOptions,
    BnbFp4,
    BnbInt8,
    BnbInt8Options,
    BnbNf4,
)
from quantkit.errors import InvalidOptionError, UnsupportedModelError  # noqa: E402
from quantkit.models import ModelSource, conv1d_type, linear_layers  # noqa: E402
from quantkit.testing import logits, relative_error, tiny_gpt2  # noqa: E402


def quantize(backend, model_or_dir, **options):
    source = ModelSource(given=model_or_dir) if isinstance(model_or_dir, nn.Module) \
        else ModelSource(path=model_or_dir)
    return backend.quantize(source, backend.options_type(**options))


def weights(model, skip=("lm_head",)) -> dict[str, torch.Tensor]:
    return {name: module.weight.detach().clone() for name, module in linear_layers(model, skip)}


def test_importing_the_backend_does_not_import_bitsandbytes():
    code = "import sys, quantkit.backends.bitsandbytes; assert 'bitsandbytes' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_double_quant_must_be_a_bool(bad):
    with pytest.raises(InvalidOptionError, match="double_quant"):
        Bnb4bitOptions(double_quant=bad)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "6", True])
def test_int8_threshold_must_be_a_number_at_least_zero(bad):
    with pytest.raises(InvalidOptionError, match="threshold"):
        BnbInt8Options(threshold=bad)


def test_int8_threshold_accepts_zero_and_ints():
    assert BnbInt8Options(threshold=0).threshold == 0.0
    assert BnbInt8Options(threshold=4).threshold == 4.0


def test_owns_tells_nf4_fp4_and_int8_apart():
    from transformers import BitsAndBytesConfig

    written = {
        "bnb-nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        "bnb-fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
        "bnb-int8": BitsAndBytesConfig(load_in_8bit=True),
    }
    for name, config in written.items():
        as_json = json.loads(config.to_json_string(use_diff=False))  # as config.json holds it
        assert [b.name for b in (BnbNf4, BnbFp4, BnbInt8) if b.owns(as_json)] == [name]
    assert not any(b.owns({"quant_method": "hqq"}) for b in (BnbNf4, BnbFp4, BnbInt8))


def test_is_quantized_module_knows_its_own_layers(llama_dir):
    model = quantize(BnbNf4(), llama_dir)
    layer = model.model.layers[0].mlp.up_proj
    assert BnbNf4().is_quantized_module(layer)
    assert not BnbFp4().is_quantized_module(layer)
    assert not BnbInt8().is_quantized_module(layer)
    assert not BnbNf4().is_quantized_module(model.lm_head)


def test_skip_keeps_named_layers_in_float(llama_dir):
    backend = BnbInt8()
    model = quantize(backend, llama_dir, skip=("mlp.down_proj", "model.layers.1.self_attn"))
    float_layers = {name for name, module in linear_layers(model) if not backend.is_quantized_module(module)}
    assert float_layers == {"lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj",
                            "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
                            "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj"}
    assert all(type(model.get_submodule(name)) is nn.Linear for name in float_layers)
    # quantkit's matching: a bare word fragment names no layer (transformers' suffix match would).
    model = quantize(backend, llama_dir, skip=("proj",))
    assert sum(backend.is_quantized_module(m) for m in model.modules()) == 14


def test_a_linear_layer_left_in_float_is_reported(llama_dir):
    """transformers converts only exact nn.Linear / Conv1D; a subclass would stay float silently."""
    backend = BnbNf4()
    model = quantize(backend, llama_dir)
    model.model.layers[0].mlp.up_proj = type("MyLinear", (nn.Linear,), {})(128, 256, bias=False)
    with pytest.raises(UnsupportedModelError, match=r"model\.layers\.0\.mlp\.up_proj"):
        backend._check_quantized(model, ["lm_head"])
    backend._check_quantized(model, ["lm_head", "model.layers.0.mlp.up_proj"])


@pytest.mark.parametrize("backend", [BnbNf4(), BnbInt8()], ids=lambda b: b.name)
def test_gpt2_conv1d_is_quantized_and_dequantizes_untransposed(backend):
    original = tiny_gpt2()
    model = quantize(backend, original)
    assert backend.is_quantized_module(model.transformer.h[0].attn.c_attn)
    assert relative_error(logits(model), logits(original)) < 0.2
    plain = backend.dequantize(model)
    bound = 0.15 if backend.name == "bnb-nf4" else 0.02
    for name, before in weights(original).items():
        after = plain.get_submodule(name)
        assert type(after) is conv1d_type(), name
        assert after.weight.shape == before.shape, name
        # attn.c_proj is square: a transposed weight would have the right shape and ~140 % error.
        assert relative_error(after.weight, before) < bound, name


@pytest.mark.parametrize("backend", [BnbNf4(), BnbFp4(), BnbInt8()], ids=lambda b: b.name)
def test_dequantize_after_reload_needs_no_dtype(backend, gpt2_dir, tmp_path):
    backend.save(quantize(backend, gpt2_dir), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert backend.owns(config["quantization_config"])
    reloaded = backend.load(tmp_path, config, LoadOptions())
    plain = backend.dequantize(reloaded)
    assert {p.dtype for p in plain.parameters()} == {torch.float32}
    assert not any(backend.is_quantized_module(m) for m in plain.modules())
    assert relative_error(logits(plain), logits(reloaded)) < 0.02


@pytest.mark.parametrize("backend", [BnbNf4(), BnbFp4()], ids=lambda b: b.name)
def test_save_and_dequantize_after_a_forward_pass(backend, llama_dir, tmp_path):
    """On AVX512-BF16 CPUs bitsandbytes repacks 4-bit weights in place on the first forward pass,
    and its own undo on save is lossy; the backend must save and dequantize what the model computes."""
    model = quantize(backend, llama_dir)
    before = weights(backend.dequantize(model))
    first = logits(model)
    after = weights(backend.dequantize(model))
    for name in before:  # repacking rounds the scales to bfloat16, nothing more
        assert relative_error(after[name], before[name]) < 5e-3, name
    backend.save(model, tmp_path)
    assert torch.equal(logits(model), first)
    config = json.loads((tmp_path / "config.json").read_text())
    assert torch.equal(logits(backend.load(tmp_path, config, LoadOptions())), first)


def test_int8_dequantize_is_the_same_before_and_after_a_forward_pass(llama_dir):
    backend = BnbInt8()
    model = quantize(backend, llama_dir)
    before = weights(backend.dequantize(model))
    logits(model)  # moves the row scales from the weight to the layer's state
    after = weights(backend.dequantize(model))
    assert all(torch.equal(after[name], before[name]) for name in before)


def test_dtype_option_sets_compute_and_float_dtype(llama_dir):
    model = quantize(BnbNf4(), llama_dir, dtype="bfloat16")
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.layers[0].mlp.up_proj.compute_dtype == torch.bfloat16
    assert logits(model).isfinite().all()
