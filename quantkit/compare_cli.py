"""``quantkit compare``: the command-line face of ``qk.compare``."""

from __future__ import annotations

import argparse
from pathlib import Path

from quantkit.report import METRIC_KEYS

# `quantkit demo` stays within minutes on 2 CPU cores: the first 16,384 tokens of the shipped eval
# text, and GPTQ / AWQ calibrated on 32 windows of 512 tokens (their default, 128, takes AWQ ~5 min).
DEMO_SETTINGS = {"max_eval_tokens": 16384}
DEMO_CALIBRATION = {"n_samples": 32, "seq_len": 512}


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``quantkit compare`` to the ``quantkit`` command's subparsers."""
    p = subparsers.add_parser("compare", aliases=["demo"],
                              help="quantize a model with several methods and measure each "
                                   "(demo: on the model quantkit ships)")
    p.add_argument("model", nargs="?", help="float model folder (default: the small model quantkit ships)")
    p.add_argument("--methods", "-m", nargs="+", help="methods to compare (default: a CPU-friendly set)")
    p.add_argument("--eval-text", dest="eval_text", help="a .txt file (default: quantkit's held-out text)")
    p.add_argument("--calibration", help="a .txt file for methods that calibrate (default: shipped text)")
    p.add_argument("--metrics", nargs="+", choices=tuple(METRIC_KEYS), help="default: all of them")
    p.add_argument("--dtype", help="float dtype of the baseline and the unquantized parts")
    p.add_argument("--device", default="cpu")
    for name, kind in (("window", int), ("stride", int), ("max-eval-tokens", int), ("batch-size", int),
                       ("prompt-tokens", int), ("decode-tokens", int)):
        p.add_argument(f"--{name}", type=kind, dest=name.replace("-", "_"))
    p.add_argument("--output-dir", dest="output_dir", help="keep the checkpoints in this (new) folder")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--plot", help="also save a perplexity-vs-bits plot (PNG) to this file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=cmd_compare)
    return p


def demo_methods() -> list:
    """compare's default methods, the calibrated ones with the demo's calibration size."""
    from quantkit import registry
    from quantkit.compare import DEFAULT_METHODS

    return [{"method": m, "label": m, **DEMO_CALIBRATION} if registry.get(m).capabilities.needs_calibration
            else m for m in DEFAULT_METHODS]


def cmd_compare(args: argparse.Namespace) -> None:
    from quantkit.compare import DEFAULT_METRICS, compare

    names = ("window", "stride", "max_eval_tokens", "batch_size", "prompt_tokens", "decode_tokens")
    settings = dict(DEMO_SETTINGS) if args.command == "demo" else {}
    settings.update({k: getattr(args, k) for k in names if getattr(args, k) is not None})
    eval_text = Path(args.eval_text) if args.eval_text else None
    methods = args.methods or (demo_methods() if args.command == "demo" else None)
    report = compare(args.model, methods, eval_text=eval_text, calibration=args.calibration,
                     metrics=args.metrics or DEFAULT_METRICS, dtype=args.dtype, device=args.device,
                     output_dir=args.output_dir, progress=not args.no_progress, **settings)
    print(report)
    if args.json:
        report.to_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(path=args.plot)
        print(f"wrote {args.plot}")
