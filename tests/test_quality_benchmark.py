"""benchmarks/quality.py runs end to end (--quick) and its goal column follows from its own rows."""

from __future__ import annotations

import json

from quantkit.testing import save_tiny

from test_benchmarks import script


def test_quality_quick(tmp_path):
    model_dir = save_tiny("llama", tmp_path / "m")
    out = tmp_path / "quality.json"
    script("quality").main(["--quick", "--model", str(model_dir), "--out", str(out)])
    data = json.loads(out.read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert list(rows) == ["float (float32)", "bnb-int8", "hqq 4-bit g64"]
    for label, goal in (("bnb-int8", 1.0), ("hqq 4-bit g64", 8.0)):
        row = rows[label]
        assert row["goal %"] == goal and row["error"] is None
        assert row["meets goal"] == (row["ppl change %"] <= goal)
        assert row["perplexity"] > 0 and 0 < row["top-1 agree"] <= 1
    assert data["report"]["meta"]["eval_tokens"] == 512
