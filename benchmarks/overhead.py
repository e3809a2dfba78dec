"""quantkit's overhead over each backend's own API: quantize and load wall time and peak memory.

For every method, on the same model in the same process, the quantkit call (``qk.quantize``,
``qk.load``) and the code a user writes with the library directly (``direct_api.py``) run in
alternating order (A B B A ...) over ``--repeats`` after ``--warmup`` untimed rounds; the table
gives medians and quantkit / direct (goal: <= 1.05), and the ratio of the fastest runs ("min x",
steadier where other work shares the CPU). Memory is the peak RSS of the block over the
RSS at its start (``quantkit.measure``; the process's libraries are not counted). Load reads the
folder quantkit saved, except where the library has its own format (hqq).

quantkit does more than the direct code in places, on purpose, and the ``note`` column says where:
checks (skip names, group sizes, layers left in float), gptq/awq's reload after quantizing (both
sides reload: gptqmodel's in-memory model is wrong on CPU) and the packed-tensor copy it keeps,
decompressing compressed-tensors layers at load (stock loading does it at the first forward).
Where a library has no direct path on CPU the row says why instead of a number.

    .venv/bin/python benchmarks/overhead.py --out overhead.json [--model DIR] [--methods ...]
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import base_parser, benchmark_model, calibration_options, seven_b_model, show, write_json
from direct_api import DIRECT, Direct
from torch import nn

import quantkit as qk
from quantkit import registry
from quantkit.measure import measure, release_memory, rss_bytes

METHODS = ["bnb-nf4", "bnb-int8", "hqq", "torchao-int8", "torchao-int4", "gptq", "awq", "ct-w4a16"]
QUICK_METHODS = ["bnb-int8", "hqq", "torchao-int8"]
GOAL = 1.05
Call = Callable[[], nn.Module]
Samples = dict[str, list[dict[str, float]]]  # side -> one dict per timed run
COLUMNS = ["method", "phase", "quantkit s", "direct s", "time x", "min x", "quantkit MiB", "direct MiB",
           "mem x", "time ok", "mem ok", "note"]


def timed(fn: Call) -> tuple[dict[str, float], nn.Module]:
    """Run ``fn`` under ``measure``: (seconds, peak RSS, peak RSS over the start), and its result."""
    release_memory()
    start = rss_bytes()
    with measure(release=False) as m:
        result = fn()
    return {"seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes,
            "peak_growth_bytes": max(0, m.peak_rss_bytes - start)}, result


def quantize_calls(method: str, direct: Direct, model_dir: Path, calibration: dict[str, Any] | None,
                   work: Path) -> dict[str, Call | None]:
    """side -> the quantize call to time (None where the side has no such path)."""
    options = calibration if registry.get(method).capabilities.needs_calibration else {}
    ids = calibration["calibration"] if calibration else None
    return {"quantkit": lambda: qk.quantize(model_dir, method, **options),
            "direct": (lambda: direct.quantize(model_dir, ids, work)) if direct.quantize else None}


def load_calls(direct: Direct, folders: dict[str, Path]) -> dict[str, Call | None]:
    """side -> the load call to time, for the sides whose quantize left a saved folder."""
    mine, theirs = folders.get("quantkit"), folders.get("direct")
    return {"quantkit": (lambda: qk.load(mine)) if mine else None,
            "direct": (lambda: direct.load(theirs)) if theirs and direct.load else None}


def run_phase(calls: dict[str, Call | None], rounds: int, warmup: int,
              after: Callable[[str, nn.Module], None] | None) -> tuple[Samples, dict[str, str]]:
    """Time both sides in A B B A order; ``after(side, result)`` sees each side's first result."""
    samples: Samples = {"quantkit": [], "direct": []}
    errors: dict[str, str] = {}
    for i in range(rounds):
        for side in ("quantkit", "direct") if i % 2 == 0 else ("direct", "quantkit"):
            call = calls[side]
            if call is None or side in errors:
                continue
            try:
                sample, result = timed(call)
                if i == 0 and after is not None:
                    after(side, result)
            except Exception as exc:  # noqa: BLE001 - a broken path is a row's note, not a crash
                errors[side] = f"{side} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                continue
            del result
            if i >= warmup:
                samples[side].append(sample)
    return samples, errors


def summary(method: str, phase: str, samples: Samples, notes: list[str]) -> dict:
    """One row: medians of each side, the ratios, whether the goal is met, and the raw samples."""
    row: dict[str, Any] = {"method": method, "phase": phase, "samples": samples}
    for side in ("quantkit", "direct"):
        runs = samples[side]
        row[f"{side}_s"] = statistics.median(r["seconds"] for r in runs) if runs else None
        row[f"{side}_min_s"] = min(r["seconds"] for r in runs) if runs else None
        row[f"{side}_peak_rss_bytes"] = statistics.median(r["peak_rss_bytes"] for r in runs) if runs else None
        row[f"{side}_peak_growth_bytes"] = (statistics.median(r["peak_growth_bytes"] for r in runs)
                                            if runs else None)
    both = row["quantkit_s"] is not None and row["direct_s"] is not None
    row["time_ratio"] = row["quantkit_s"] / row["direct_s"] if both else None
    row["min_time_ratio"] = row["quantkit_min_s"] / row["direct_min_s"] if both else None
    grow_q, grow_d = row["quantkit_peak_growth_bytes"], row["direct_peak_growth_bytes"]
    row["mem_ratio"] = grow_q / grow_d if both and grow_d else None
    row["time_ok"] = row["time_ratio"] <= GOAL if row["time_ratio"] is not None else None
    row["mem_ok"] = row["mem_ratio"] <= GOAL if row["mem_ratio"] is not None else None
    row["note"] = "; ".join(n for n in notes if n)
    return row


def bench_method(method: str, model_dir: Path, calibration: dict[str, Any] | None, work: Path,
                 repeats: int, warmup: int) -> list[dict[str, Any]]:
    """The quantize row and the load row of one method."""
    direct = DIRECT[method]
    folders: dict[str, Path] = {}

    def keep(side: str, model: nn.Module) -> None:  # the first result of each side is saved for load
        folder = work / method / side
        if side == "quantkit":
            folders["quantkit"] = qk.save(model, folder)
            if direct.save is None:  # the direct loader reads quantkit's folder
                folders["direct"] = folders["quantkit"]
        elif direct.save is not None:
            folder.mkdir(parents=True)
            direct.save(model, folder)
            folders["direct"] = folder

    rounds = warmup + repeats
    calls = quantize_calls(method, direct, model_dir, calibration, work)
    samples, failed = run_phase(calls, rounds, warmup, keep)
    rows = [summary(method, "quantize", samples, [direct.quantize_note, *failed.values()])]
    release_memory()
    samples, errors = run_phase(load_calls(direct, folders), rounds, warmup, None)
    unsaved = [f"{side}: nothing to load, its quantize failed" for side in failed]
    rows.append(summary(method, "load", samples, [direct.load_note, *errors.values(), *unsaved]))
    release_memory()
    return rows


def table_row(row: dict[str, Any]) -> dict[str, Any]:
    mib = {side: row[f"{side}_peak_growth_bytes"] for side in ("quantkit", "direct")}
    return {"method": row["method"], "phase": row["phase"], "quantkit s": row["quantkit_s"],
            "direct s": row["direct_s"], "time x": row["time_ratio"], "min x": row["min_time_ratio"],
            "mem x": row["mem_ratio"],
            "quantkit MiB": mib["quantkit"] / 2**20 if mib["quantkit"] is not None else None,
            "direct MiB": mib["direct"] / 2**20 if mib["direct"] is not None else None,
            "time ok": row["time_ok"], "mem ok": row["mem_ok"], "note": row["note"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per side (default 3, --quick 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--seven-b-layers", type=int, default=0,
                        help="run on a random Llama with Llama-2-7B layer shapes and this many layers")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 steadies times on a shared machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods or (QUICK_METHODS if args.quick else METHODS)
    unknown = [m for m in methods if m not in DIRECT]
    if unknown:
        parser.error(f"no direct path is written for {unknown}; choose from {sorted(DIRECT)}")
    repeats = args.repeats or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="quantkit-overhead-") as tmp:
        work = Path(tmp)
        if args.seven_b_layers:
            model_dir, _, about = seven_b_model(work, args.seven_b_layers)
        else:
            model_dir, about = benchmark_model(args, work)
        calibrated = any(registry.get(m).capabilities.needs_calibration for m in methods)
        calibration = calibration_options(model_dir) if calibrated else None
        rows = [row for m in methods
                for row in bench_method(m, model_dir, calibration, work, repeats, args.warmup)]
    title = f"quantkit / direct API, medians of {repeats} (goal <= {GOAL}); model: {about}"
    text = show([table_row(r) for r in rows], COLUMNS, title)
    settings = {k: v for k, v in (calibration or {}).items() if k != "calibration"}
    payload = {"benchmark": "overhead", "model": about, "repeats": repeats, "warmup": args.warmup,
               "goal": GOAL, "calibration": settings or None, "rows": rows, "table": text}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
