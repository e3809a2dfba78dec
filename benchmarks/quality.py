"""Quality benchmark: the ``qk.compare`` table on the shipped model, checked against the goals
8-bit within +1 % perplexity of the float model, 4-bit calibrated within +5 %, 4-bit data-free
within +8 %.

    .venv/bin/python benchmarks/quality.py --out benchmarks/results/quality.json
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import base_parser, benchmark_model, show, write_json  # noqa: E402

# method label -> (method, options, goal group)
RUNS = {
    "bnb-int8": ("bnb-int8", {}, "8-bit"),
    "torchao-int8": ("torchao-int8", {}, "8-bit"),
    "hqq 8-bit": ("hqq", {"bits": 8}, "8-bit"),
    "gptq 4-bit g128": ("gptq", {"bits": 4, "group_size": 128}, "4-bit calibrated"),
    "awq 4-bit g128": ("awq", {"group_size": 128}, "4-bit calibrated"),
    "bnb-nf4": ("bnb-nf4", {}, "4-bit data-free"),
    "hqq 4-bit g64": ("hqq", {"bits": 4, "group_size": 64}, "4-bit data-free"),
    "torchao-int4 g128": ("torchao-int4", {"group_size": 128}, "4-bit data-free"),
    "ct-w4a16 g128": ("ct-w4a16", {"group_size": 128}, "4-bit data-free"),
}
GOALS = {"8-bit": 1.0, "4-bit calibrated": 5.0, "4-bit data-free": 8.0}  # max perplexity increase, %
QUICK = ("bnb-int8", "hqq 4-bit g64")
COLUMNS = ["method", "group", "bits/weight", "size vs float", "perplexity", "ppl change %", "goal %",
           "meets goal", "KL", "top-1 agree", "decode tok/s", "error"]


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-eval-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    labels = args.methods or (QUICK if args.quick else tuple(RUNS))
    unknown = [m for m in labels if m not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {list(RUNS)}")
    import quantkit as qk

    with tempfile.TemporaryDirectory(prefix="quantkit-quality-") as tmp:
        model_dir, described = benchmark_model(args, Path(tmp))
        settings = {"max_eval_tokens": args.max_eval_tokens or (512 if args.quick else None)}
        if args.quick:
            settings.update(window=128, prompt_tokens=16, decode_tokens=4, latency_repeats=1)
        runs = [{"method": RUNS[m][0], "label": m, **RUNS[m][1]} for m in labels]
        report = qk.compare(model_dir, runs, **settings)  # the shipped eval and calibration texts
    rows = []
    for row in report.rows:
        group = RUNS[row["method"]][2] if row["method"] in RUNS else "float"
        change = row.get("ppl_change_pct")
        goal = GOALS.get(group)
        rows.append({"method": row["method"], "group": group, "bits/weight": row.get("bits_per_weight"),
                     "size vs float": row.get("size_ratio"), "perplexity": row.get("perplexity"),
                     "ppl change %": change, "goal %": goal,
                     "meets goal": None if goal is None or change is None else change <= goal,
                     "KL": row.get("kl"), "top-1 agree": row.get("top1"),
                     "decode tok/s": row.get("decode_tokens_per_s"), "error": row.get("error")})
    title = f"quality on {described}, {report.meta['scored_tokens']} scored tokens"
    show(rows, COLUMNS, title)
    payload = {"benchmark": "quality", "model": described, "goals_pct": GOALS, "rows": rows,
               "report": report.to_dict()}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
