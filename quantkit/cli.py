"""The ``quantkit`` command line: a thin layer over the public API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from quantkit.errors import QuantkitError


def _value(text: str) -> Any:
    """Parse an option value: JSON if it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise QuantkitError(f"--option {item!r} must look like key=value, e.g. --option bits=4")
        options[key.replace("-", "_")] = _value(value)
    for key in ("bits", "group_size", "dtype", "device"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    if getattr(args, "skip", None):
        options["skip"] = [s for s in args.skip.split(",") if s]
    return options


def cmd_methods(args: argparse.Namespace) -> None:
    import quantkit as qk

    table = qk.methods()
    print(json.dumps(table.rows, indent=2) if args.json else table)


def cmd_hardware(args: argparse.Namespace) -> None:
    import quantkit as qk

    print(qk.hardware())


def cmd_quantize(args: argparse.Namespace) -> None:
    import quantkit as qk

    model = qk.quantize(args.model, args.method, **_options(args))
    out = qk.save(model, args.out, overwrite=args.overwrite)
    print(f"saved {model._quantkit['method']} checkpoint to {out}")


def cmd_inspect(args: argparse.Namespace) -> None:
    import quantkit as qk

    print(qk.inspect(args.folder))


def cmd_dequantize(args: argparse.Namespace) -> None:
    import quantkit as qk

    out = qk.save(qk.dequantize(args.folder, dtype=args.dtype), args.out, overwrite=args.overwrite)
    print(f"saved float model to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("methods", help="every method: installed? usable here? why not?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_methods)

    sub.add_parser("hardware", help="the detected machine").set_defaults(run=cmd_hardware)

    p = sub.add_parser("quantize", help="quantize a model folder and save the result")
    p.add_argument("model", help="local model folder (or a Hub id already in the cache)")
    p.add_argument("--method", "-m", required=True)
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--bits", type=int)
    p.add_argument("--group-size", type=int, dest="group_size")
    p.add_argument("--skip", help="comma-separated module names to keep in float")
    p.add_argument("--dtype")
    p.add_argument("--device")
    p.add_argument("--option", action="append", help="any method option as key=value")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=cmd_quantize)

    p = sub.add_parser("inspect", help="what format a checkpoint folder holds")
    p.add_argument("folder")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("dequantize", help="turn a quantized checkpoint into a plain float one")
    p.add_argument("folder")
    p.add_argument("--out", "-o", required=True)
    p.add_argument("--dtype")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=cmd_dequantize)

    from quantkit import compare_cli, selector

    selector.add_cli(sub)
    compare_cli.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except QuantkitError as exc:
        print(f"quantkit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
