"""compressed-tensors specifics, with real compressed-tensors on tiny local models: the tensors each
scheme writes, saving after forward passes, folders written by compressed-tensors itself, GPT-2,
which methods own which configs, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import quantkit as qk
from quantkit import registry
from quantkit.errors import InvalidOptionError, QuantkitError, UnsupportedModelError
from quantkit.formats import pickle_files
from quantkit.testing import logits, relative_error, tiny_llama

pytest.importorskip("compressed_tensors")
from quantkit.backends import compressed_tensors as ct  # noqa: E402

# Measured relative weight error (Frobenius) on the tiny models, bounds about 1.5x.
WEIGHT_ERROR = {"ct-w4a16": 0.17, "ct-w8a16": 0.01, "ct-w8a8": 0.01, "ct-fp8": 0.04, "ct-nvfp4": 0.15,
                "ct-mxfp4": 0.17}
# What each method stores for q_proj (out 128, in 128) of the tiny Llama: name -> (dtype, shape).
STORED = {
    "ct-w4a16": ("pack-quantized", {"weight_packed": (torch.int32, (128, 16)),
                                    "weight_scale": (torch.float32, (128, 1)),
                                    "weight_shape": (torch.int64, (2,))}),
    "ct-w8a16": ("pack-quantized", {"weight_packed": (torch.int32, (128, 32)),
                                    "weight_scale": (torch.float32, (128, 1)),
                                    "weight_shape": (torch.int64, (2,))}),
    "ct-w8a8": ("int-quantized", {"weight": (torch.int8, (128, 128)),
                                  "weight_scale": (torch.float32, (128, 1))}),
    "ct-fp8": ("float-quantized", {"weight": (torch.float8_e4m3fn, (128, 128)),
                                   "weight_scale": (torch.float32, (128, 1))}),
    "ct-nvfp4": ("nvfp4-pack-quantized", {"weight_packed": (torch.uint8, (128, 64)),
                                          "weight_scale": (torch.float8_e4m3fn, (128, 8)),
                                          "weight_global_scale": (torch.float32, (1,))}),
    "ct-mxfp4": ("mxfp4-pack-quantized", {"weight_packed": (torch.uint8, (128, 64)),
                                          "weight_scale": (torch.uint8, (128, 4))}),
}
METHODS = tuple(STORED)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The ct-* methods in the registry for these tests (a no-op once quantkit lists them)."""
    added = [b for b in ct.METHODS if b.name not in registry.all_methods()]
    for backend in added:
        registry.register(backend)
    yield
    for backend in added:
        registry._table().pop(backend.name)
        for key in (backend.name, *backend.aliases):
            registry._aliases.pop(key.lower(), None)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model_dirs):
    """Quantize, run, and save each (method, arch) once: (model, its logits, folder)."""
    cache: dict = {}

    def get(method: str, arch: str = "llama"):
        if (method, arch) not in cache:
            model = qk.quantize(model_dirs[arch], method)
            q_logits = logits(model)  # a forward pass before saving
            cache[method, arch] = model, q_logits, qk.save(model, tmp_path_factory.mktemp("q") / "out")
        return cache[method, arch]

    return get


def stored(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        names = f.keys()
        return {k[len(prefix):]: f.get_tensor(k) for k in names if k.startswith(prefix)}


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_holds_the_compressed_tensors_of_the_scheme(method, saved):
    _, _, folder = saved(method)
    fmt, expected = STORED[method]
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["quantization_status"] == "compressed"
    assert qc["format"] == fmt and qc["ignore"] == ["lm_head"]
    tensors = stored(folder, "model.layers.0.self_attn.q_proj.")
    assert {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()} == expected
    assert stored(folder, "lm_head.")["weight"].dtype == torch.float32
    assert pickle_files(folder) == []
    assert qk.inspect(folder).method == method


@pytest.mark.parametrize("method", METHODS)
def test_weight_error_against_the_original_weights(method, saved, model_dirs):
    model, _, _ = saved(method)
    original = AutoModelForCausalLM.from_pretrained(model_dirs["llama"]).state_dict()
    backend = registry.get(method)()
    plain = qk.dequantize(model)
    names = [n for n, m in model.named_modules() if n and backend.is_quantized_module(m)]
    assert len(names) == 14
    errors = [relative_error(plain.get_submodule(n).weight, original[n + ".weight"]) for n in names]
    assert 0 < max(errors) <= WEIGHT_ERROR[method]


@pytest.mark.parametrize("method", ["ct-w8a16", "ct-w8a8", "ct-nvfp4"])
def test_forward_passes_then_save_reload_identically_in_bfloat16(method, model_dirs, tmp_path):
    # In bf16, compressing the decompressed weights again (upstream's save after a forward pass)
    # moves some 8-bit values by one step; quantkit's save must not.
    model = qk.quantize(model_dirs["llama"], method, dtype="bfloat16")
    first = logits(model)
    assert torch.equal(logits(model), first)
    folder = qk.save(model, tmp_path / "q")
    assert torch.equal(logits(qk.load(folder)), first)
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(folder)), first)


def test_a_loaded_model_saves_the_same_tensors_again(saved, tmp_path):
    _, q_logits, folder = saved("ct-w4a16")
    loaded = qk.load(folder)
    assert torch.equal(logits(loaded), q_logits)
    again = qk.save(loaded, tmp_path / "again")
    first, second = stored(folder, ""), stored(again, "")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_changed_weights_are_not_saved_silently(model_dirs, tmp_path):
    model = qk.quantize(model_dirs["llama"], "ct-w8a8")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    with pytest.raises(QuantkitError, match="no longer matches"):
        qk.save(model, tmp_path / "q")


def test_asymmetric_groups_store_packed_zero_points_and_load(model_dirs, tmp_path):
    model = qk.quantize(model_dirs["llama"], "ct-w4a16", group_size=32, symmetric=False)
    folder = qk.save(model, tmp_path / "q")
    tensors = stored(folder, "model.layers.0.self_attn.q_proj.")
    assert tensors["weight_zero_point"].dtype == torch.int32
    assert tuple(tensors["weight_zero_point"].shape) == (16, 4)  # 128 rows x 4 groups, 8 per int32
    assert torch.equal(logits(qk.load(folder)), logits(model))
    assert not qk.inspect(folder).stock_load  # transformers 5.24 sizes the packed zero points wrongly


def test_gpt2_is_quantized_and_refused_by_stock_loading(saved):
    model, q_logits, folder = saved("ct-w4a16", "gpt2")
    assert len([m for m in model.modules() if getattr(m, "quantization_scheme", None)]) == 8
    assert not qk.inspect(folder).stock_load
    with pytest.raises(Exception, match="quantkit_conv1d_saved_as_linear"):
        AutoModelForCausalLM.from_pretrained(folder)
    assert torch.equal(logits(qk.load(folder)), q_logits)


@pytest.mark.parametrize("arch,skip,ignored", [
    ("llama", ["q_proj"], ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "lm_head"]),
    ("gpt2", ["c_fc"], ["lm_head"]),  # a kept Conv1D is no Linear, so compressed-tensors never targets it
])
def test_skipped_layers_stay_float_through_save_and_load(arch, skip, ignored, model_dirs, tmp_path):
    model = qk.quantize(model_dirs[arch], "ct-w8a8", skip=skip)
    folder = qk.save(model, tmp_path / "q")
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["ignore"] == ignored
    loaded = qk.load(folder)
    kept = [n for n, m in loaded.named_modules() if n.endswith(skip[0])]
    assert kept and not any(getattr(loaded.get_submodule(n), "quantization_scheme", None) for n in kept)
    assert torch.equal(logits(loaded), logits(model))


def ct_written_folder(folder: Path, groups: dict[str, list[str]], fmt: str | None = None):
    """A tiny Llama quantized and saved through compressed-tensors' own API (ModelCompressor), with
    min-max scales computed here; returns its fake-quantized logits before compression."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams

    model = tiny_llama(seed=3)
    schemes = {f"group_{i}": preset_name_to_scheme(name, targets)
               for i, (name, targets) in enumerate(groups.items())}
    apply_quantization_config(model, QuantizationConfig(config_groups=schemes, ignore=["lm_head"]))
    for module in model.modules():
        args = getattr(getattr(module, "quantization_scheme", None), "weights", None)
        if args is None:
            continue
        w = module.weight.detach()
        w = w if args.strategy == "channel" else w.unflatten(-1, (-1, args.group_size))
        scale, zero = calculate_qparams(w.amin(-1, keepdim=args.strategy == "channel"),
                                        w.amax(-1, keepdim=args.strategy == "channel"), args)
        module.weight_scale.data, module.weight_zero_point.data = scale, zero.to(torch.int8)
    fake = logits(model)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model)
    model.save_pretrained(folder)
    compressor.update_config(folder)
    return fake


@pytest.mark.parametrize("groups,fmt,method", [
    ({"W8A16": ["Linear"]}, "naive-quantized", "ct-w8a16"),
    ({"W8A8": ["re:.*self_attn.*"], "W4A16": ["re:.*mlp.*"]}, None, "ct-w8a8"),
], ids=["w8a16-naive", "mixed-precision"])
def test_loads_folders_written_by_compressed_tensors_itself(groups, fmt, method, tmp_path):
    fake = ct_written_folder(tmp_path / "ct", groups, fmt)
    qc = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert qc["format"] == (fmt or "mixed-precision")
    assert qk.inspect(tmp_path / "ct").method == method
    model = qk.load(tmp_path / "ct")
    q_logits = logits(model)
    assert torch.equal(q_logits, logits(AutoModelForCausalLM.from_pretrained(tmp_path / "ct")))
    assert relative_error(q_logits, fake) < 1e-5
    again = qk.save(model, tmp_path / "again")  # in the format the folder had
    assert json.loads((again / "config.json").read_text())["quantization_config"]["format"] == qc["format"]
    assert torch.equal(logits(qk.load(again)), q_logits)


def test_each_config_has_exactly_one_owner(saved):
    for method in METHODS:
        qc = json.loads((saved(method)[2] / "config.json").read_text())["quantization_config"]
        assert [m for m in METHODS if registry.get(m).owns(qc)] == [method]
    others = [{"quant_method": "compressed-tensors", "config_groups": {"W4AFP8": ["Linear"]}},
              {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
                  "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "block"}}}},
              {"quant_method": "compressed-tensors", "config_groups": {}, "kv_cache_scheme": {"num_bits": 8}}]
    for qc in others:
        assert len([m for m in METHODS if registry.get(m).owns(qc)]) == 1
    assert not registry.get("ct-w4a16").owns({"quant_method": "gptq", "bits": 4})


def test_layers_a_group_does_not_divide_are_named(tmp_path):
    config = LlamaConfig(vocab_size=512, hidden_size=96, intermediate_size=192, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with pytest.raises(UnsupportedModelError, match="q_proj"):
        qk.quantize(model, "ct-w4a16", group_size=64)
    assert qk.quantize(model, "ct-w4a16", group_size=32) is not None
    with pytest.raises(InvalidOptionError):
        qk.quantize(model, "ct-w4a16", group_size=100)


def test_sparse_checkpoints_are_refused_with_a_reason(saved, tmp_path):
    import shutil

    folder = shutil.copytree(saved("ct-w8a8")[2], tmp_path / "sparse")
    data = json.loads((folder / "config.json").read_text())
    data["quantization_config"]["sparsity_config"] = {"format": "sparse-24-bitmask"}
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(UnsupportedModelError, match="sparse"):
        qk.load(folder)
