"""qk.compare end to end on a tiny real model: rows, their arithmetic, failures, exports, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import quantkit as qk
from quantkit.cli import main
from quantkit.compare import MB
from quantkit.errors import EvalDataError, InvalidOptionError, SaveError, UnknownMethodError
from quantkit.footprint import weight_file_bytes
from quantkit.models import load_float_model
from quantkit.testing import tiny_corpus

FAST = dict(prompt_tokens=16, decode_tokens=4, latency_repeats=1, progress=False)
METHODS = ["hqq", ("hqq", {"bits": 8, "label": "hqq-8bit"}), ("hqq", {"bits": 5}),
           ("torchao-int4", {"group_size": 7}), "gptq"]


@pytest.fixture(scope="module")
def eval_ids(llama_dir) -> torch.Tensor:
    """200 token ids of English (under the tiny model's 256-position context: one window)."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(llama_dir)(" ".join(tiny_corpus()))["input_ids"]
    return torch.tensor(ids[:200])


@pytest.fixture(scope="module")
def run(llama_dir, eval_ids, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "checkpoints"
    report = qk.compare(llama_dir, METHODS, eval_text=eval_ids, output_dir=out, **FAST)
    return report, out


def test_rows_in_order_with_the_float_baseline_first(run):
    report, _ = run
    assert [r["method"] for r in report.rows] == [
        "float (float32)", "hqq", "hqq-8bit", "hqq bits=5", "torchao-int4 group_size=7", "gptq"]
    assert report.methods == [r["method"] for r in report.rows[1:]]


def test_a_failing_method_records_its_error_and_the_report_completes(run):
    report, _ = run
    assert set(report.failed()) == {"hqq bits=5", "torchao-int4 group_size=7"}
    assert "InvalidOptionError" in report["hqq bits=5"]["error"] and "bits" in report["hqq bits=5"]["error"]
    assert report["gptq"].get("error") is None and report["gptq"]["perplexity"] > 0
    assert "error" in report.columns() and "InvalidOptionError" in str(report)


def test_baseline_perplexity_is_exp_cross_entropy_by_hand(run, llama_dir, eval_ids):
    report, _ = run
    model = load_float_model(llama_dir)
    with torch.no_grad():
        logits = model(eval_ids.unsqueeze(0)).logits[0]
    expected = math.exp(F.cross_entropy(logits[:-1], eval_ids[1:]).item())
    assert report.baseline["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert report.meta["scored_tokens"] == eval_ids.numel() - 1 == report.meta["eval_tokens"] - 1
    base = report.baseline
    assert (base["kl"], base["top1"], base["ppl_change_pct"]) == (0.0, 1.0, 0.0)


def test_size_columns_follow_from_the_saved_files(run):
    report, out = run
    base = report.baseline
    assert base["size_mb"] == weight_file_bytes(out / "float") / MB
    for label in ("hqq", "hqq-8bit", "gptq"):
        row = report[label]
        assert row["size_mb"] == weight_file_bytes(out / label) / MB
        assert row["size_ratio"] == pytest.approx(row["size_mb"] / base["size_mb"])
    # fp32 tiny model: 32 bits float; HQQ stores an fp32 scale and zero per 64 weights
    assert base["bits_per_weight"] == 32
    assert report["hqq"]["bits_per_weight"] == pytest.approx(4 + 64 / 64)
    assert report["hqq-8bit"]["bits_per_weight"] == pytest.approx(8 + 64 / 64)
    assert base["memory_mb"] == pytest.approx(sum(p.numel() * 4 for p in load_float_model(out / "float")
                                                  .parameters()) / MB, rel=1e-3)


def test_quality_columns_are_consistent(run):
    report, _ = run
    base = report.baseline["perplexity"]
    for label in ("hqq", "hqq-8bit", "gptq"):
        row = report[label]
        assert row["ppl_change_pct"] == pytest.approx(100 * (row["perplexity"] / base - 1))
        assert row["kl"] > 0 and 0 < row["top1"] <= 1
    assert report["hqq-8bit"]["kl"] < report["hqq"]["kl"] / 10
    assert report["hqq-8bit"]["top1"] >= report["hqq"]["top1"]


def test_time_speed_and_memory_columns(run):
    report, _ = run
    for row in [report.baseline, report["hqq"], report["gptq"]]:
        assert row["load_s"] > 0 and row["prefill_ms_per_token"] > 0 and row["decode_tokens_per_s"] > 0
        assert row["peak_mb"] > row["memory_mb"] > 0
    assert report["hqq"]["quantize_s"] > 0 and report["hqq"]["quantize_peak_mb"] > 0


def test_exports(run, tmp_path):
    report, _ = run
    path = tmp_path / "report.json"
    report.to_json(path)
    again = qk.Report.from_json(path)
    assert again.rows == json.loads(path.read_text())["rows"]
    assert again.meta["window"] == report.meta["window"]
    frame = report.to_pandas()
    assert list(frame.index) == [r["method"] for r in report.rows]
    assert frame.loc["hqq", "perplexity"] == report["hqq"]["perplexity"]
    html = report._repr_html_()
    assert html.startswith("<table") and "hqq-8bit" in html
    png = tmp_path / "plot.png"
    ax = report.plot(path=png)
    assert png.stat().st_size > 1000 and len(ax.collections[0].get_offsets()) == 3  # the 3 that completed


def test_recommend_reranks_by_the_report(run):
    report, _ = run
    recs = qk.recommend("inference", "cpu", params=5e8, measured=report)
    names = [r.method for r in recs]
    measured = [n for n in names if n in ("hqq", "gptq")]
    assert names[: len(measured)] == measured  # measured methods first
    assert "failed when measured here" in recs.excluded["torchao-int4"]
    hqq = recs[names.index("hqq")]
    assert hqq.reasons[0].startswith("measured here (hqq")
    assert any(r.startswith("not measured") for r in recs[-1].reasons)


def test_warnings_are_kept_in_the_row_not_printed(run):
    report, _ = run
    for row in report.rows:
        assert all(isinstance(w, str) and ": " in w for w in row.get("warnings", []))


@pytest.mark.gpu
def test_compare_on_cuda_reports_cuda_peak_memory(llama_dir, eval_ids):
    report = qk.compare(llama_dir, ["bnb-nf4"], eval_text=eval_ids, device="cuda", **FAST)
    row = report["bnb-nf4"]
    assert row.get("error") is None and report.meta["device"] == "cuda"
    assert 0 < row["peak_mb"] < 1024  # CUDA max allocated of a tiny model, not the process RSS
    assert row["ppl_change_pct"] < 10


def test_metric_subset_fills_only_those_columns(llama_dir, eval_ids):
    report = qk.compare(llama_dir, ["hqq"], eval_text=eval_ids, metrics=("size",), **FAST)
    assert set(report["hqq"]) - {"warnings"} == {"method", "method_name", "options", "bits_per_weight",
                                                 "size_mb", "size_ratio", "memory_mb"}
    assert report.columns() == ["method", "bits_per_weight", "size_mb", "size_ratio", "memory_mb"]


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"methods": ["hqqq"]}, UnknownMethodError, "Did you mean"),
    ({"metrics": ("speed",)}, InvalidOptionError, "choose from"),
    ({"windw": 32}, InvalidOptionError, "unknown settings"),
    ({"window": 0}, InvalidOptionError, "positive"),
    ({"eval_text": "missing.txt"}, EvalDataError, "is not a file"),
    ({"eval_text": torch.tensor([1, 2, 3])}, EvalDataError, "at least"),
])
def test_bad_input_is_refused_before_any_work(llama_dir, kwargs, error, words):
    kwargs = {"methods": ["hqq"], **kwargs}
    with pytest.raises(error, match=words):
        qk.compare(llama_dir, **kwargs, progress=False)


def test_output_dir_must_be_new_or_empty(llama_dir, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SaveError, match="not an empty folder"):
        qk.compare(llama_dir, ["hqq"], output_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_command_line(llama_dir, tmp_path, capsys):
    text = tmp_path / "eval.txt"
    text.write_text("\n".join(tiny_corpus()))
    out = tmp_path / "r.json"
    assert main(["compare", str(llama_dir), "--methods", "hqq", "--metrics", "size", "perplexity",
                 "--eval-text", str(text), "--window", "64", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "hqq" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["float (float32)", "hqq"] and rows[1]["perplexity"] > 0


def test_defaults_run_on_the_shipped_trained_model():
    """qk.compare() with no model or text: the shipped model and held-out text (first 1024 tokens)."""
    report = qk.compare(methods=["bnb-nf4"], metrics=("size", "perplexity", "kl"), max_eval_tokens=1024,
                        progress=False)
    assert report.meta["model"].endswith("demo_model") and report.meta["eval_tokens"] == 1024
    base, nf4 = report.baseline, report["bnb-nf4"]
    assert base["method"] == "float (bfloat16)" and base["bits_per_weight"] == 16
    assert 20 < base["perplexity"] < 150  # trained: an untrained model of this vocabulary scores ~4000
    assert abs(nf4["ppl_change_pct"]) < 10 and nf4["top1"] > 0.8 and nf4["bits_per_weight"] < 4.5
