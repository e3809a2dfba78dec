"""benchmarks/overhead.py and benchmarks/compression.py run end to end (--quick, a tiny Llama) and
write JSON whose ratios follow from each row's own raw numbers."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest
from torch import nn

from quantkit.testing import save_tiny, tiny_llama

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def script(name: str) -> ModuleType:
    """Import benchmarks/<name>.py (not a package; its siblings are imported by name)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny("llama", tmp_path_factory.mktemp("benchmarks") / "m")


def test_overhead(model_dir, tmp_path):
    methods = ["bnb-int8", "hqq", "torchao-int8"]
    out = tmp_path / "overhead.json"
    script("overhead").main(["--quick", "--model", str(model_dir), "--out", str(out), "--methods", *methods,
                             "--repeats", "2", "--warmup", "0"])
    data = json.loads(out.read_text())
    assert [(r["method"], r["phase"]) for r in data["rows"]] == \
        [(m, phase) for m in methods for phase in ("quantize", "load")]
    for row in data["rows"]:
        for side in ("quantkit", "direct"):
            runs = row["samples"][side]
            assert len(runs) == 2
            assert row[f"{side}_s"] == statistics.median(r["seconds"] for r in runs) > 0
            assert row[f"{side}_peak_rss_bytes"] > 0
        assert row["time_ratio"] == pytest.approx(row["quantkit_s"] / row["direct_s"])
        assert row["min_time_ratio"] == pytest.approx(min(r["seconds"] for r in row["samples"]["quantkit"])
                                                      / min(r["seconds"] for r in row["samples"]["direct"]))
        assert row["time_ok"] == (row["time_ratio"] <= data["goal"])
        if row["direct_peak_growth_bytes"]:
            assert row["mem_ratio"] == pytest.approx(row["quantkit_peak_growth_bytes"]
                                                     / row["direct_peak_growth_bytes"])
        assert "failed" not in row["note"]
    assert data["environment"]["versions"]["torch"]
    assert "hqq" in data["table"]


def test_compression(model_dir, tmp_path):
    methods = ["bnb-nf4", "bnb-int8", "torchao-int4"]
    out = tmp_path / "compression.json"
    script("compression").main(["--quick", "--model", str(model_dir), "--out", str(out),
                                "--methods", *methods])
    data = json.loads(out.read_text())
    rows = data["model"]["rows"]
    assert [r["method"] for r in rows] == methods
    # the bf16 bytes of the quantized layers, counted here from the modules, not from any file
    linears = [m for n, m in tiny_llama().named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    assert data["model"]["bf16"]["layer_bytes"] == 2 * sum(m.weight.numel() for m in linears)
    for row in rows:
        assert "error" not in row
        assert row["checkpoint_bytes"] > 0 and row["layer_bytes"] > 0 and row["quantize_s"] > 0
        bf16_bytes = row["bf16_checkpoint_bytes"]
        assert row["checkpoint_ratio"] == pytest.approx(row["checkpoint_bytes"] / bf16_bytes)
        assert row["layer_ratio"] == pytest.approx(row["layer_bytes"] / row["layer_bf16_bytes"])
        assert row["bits_per_weight"] == pytest.approx(8 * row["layer_bytes"] / row["layer_params"])
        assert row["layer_ratio"] < (0.40 if row["bits"] == 4 else 0.60)
        assert row["layer_bytes"] < row["checkpoint_bytes"]
    assert "llama2_7b_layers" not in data  # --quick skips the 7B-shaped model
