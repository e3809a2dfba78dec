"""The backend contract, run for every registered method usable on this machine.

1. quantize -> forward: logits close to the float model's (per-method tolerance).
2. save -> load in a fresh process: bit-identical logits; no pickle loaded.
3. dequantize -> plain float layers; saves and reloads with stock transformers; logits match.
4. the saved folder loads with stock transformers where the format supports it.
5. Llama (nn.Linear) and GPT-2 (Conv1D) both really quantized.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM

import quantkit as qk
from quantkit import registry
from quantkit.formats import pickle_files
from quantkit.models import conv1d_type
from quantkit.testing import logits, relative_error

from contract_cases import CASES

HERE = Path(__file__).parent
ARCHS = ("llama", "gpt2")
PARAMS = [pytest.param(case, arch, id=f"{case}-{arch}")
          for case in CASES for arch in CASES[case].get("archs", ARCHS)]


def fresh_logits(folder: Path, tmp_path: Path, loader: str = "quantkit") -> torch.Tensor:
    out = tmp_path / f"logits-{loader}.safetensors"
    subprocess.run([sys.executable, str(HERE / "fresh_load.py"), str(folder), str(out), loader],
                   check=True, cwd=HERE.parent)
    return load_file(out)["logits"]


@pytest.fixture(scope="module")
def quantized(model_dirs):
    """Quantize each (case, arch) once per module; cache the float and quantized logits."""
    cache: dict = {}

    def get(case: str, arch: str):
        if (case, arch) not in cache:
            spec = CASES[case]
            float_model = AutoModelForCausalLM.from_pretrained(model_dirs[arch])
            model = qk.quantize(model_dirs[arch], spec["method"], **spec.get("options", {}))
            cache[case, arch] = (model, logits(float_model), logits(model))
        return cache[case, arch]

    return get


@pytest.mark.parametrize("case,arch", PARAMS)
def test_quantize_close_to_float_and_every_layer_quantized(case, arch, quantized):
    model, float_logits, q_logits = quantized(case, arch)
    backend = registry.get(CASES[case]["method"])()
    error = relative_error(q_logits, float_logits)
    assert 0 < error <= CASES[case]["max_error"], f"relative logit error {error:.4f}"
    kept = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, conv1d_type()))
            and not backend.is_quantized_module(m)}
    assert kept == {"lm_head"}
    assert sum(backend.is_quantized_module(m) for m in model.modules()) >= 8


@pytest.mark.parametrize("case,arch", PARAMS)
def test_save_then_load_in_fresh_process_is_bit_exact(case, arch, quantized, tmp_path):
    model, _, q_logits = quantized(case, arch)
    folder = qk.save(model, tmp_path / "q")
    assert pickle_files(folder) == []
    assert (folder / "config.json").is_file() and (folder / "quantkit.json").is_file()
    assert qk.inspect(folder).method == CASES[case]["method"]
    assert torch.equal(fresh_logits(folder, tmp_path), q_logits)


@pytest.mark.parametrize("case,arch", PARAMS)
def test_stock_transformers_loads_saved_folder_or_refuses_loudly(case, arch, quantized, tmp_path):
    model, _, q_logits = quantized(case, arch)
    folder = qk.save(model, tmp_path / "q")
    if qk.inspect(folder).stock_load:
        assert torch.equal(fresh_logits(folder, tmp_path, "stock"), q_logits)
    else:
        with pytest.raises(Exception):  # noqa: B017 - any loud failure beats silently random weights
            fresh_logits(folder, tmp_path, "stock")


@pytest.mark.parametrize("case,arch", PARAMS)
def test_dequantize_gives_plain_float_model(case, arch, quantized, tmp_path):
    model, _, q_logits = quantized(case, arch)
    plain = qk.dequantize(model)
    assert getattr(plain.config, "quantization_config", None) is None
    float_layer = conv1d_type() if arch == "gpt2" else nn.Linear
    backend = registry.get(CASES[case]["method"])()
    for name, module in model.named_modules():
        if name and backend.is_quantized_module(module):
            assert type(plain.get_submodule(name)) is float_layer, name
    d_logits = logits(plain)
    assert relative_error(d_logits, q_logits) <= CASES[case]["max_dequant_error"]
    plain.save_pretrained(tmp_path / "plain")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "plain", use_safetensors=True)
    assert torch.equal(logits(reloaded), d_logits)
    assert torch.equal(logits(model), q_logits), "dequantize must not change the quantized model"
