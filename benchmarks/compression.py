"""Checkpoint size per method over the same model's bf16 checkpoint: whole folder and quantized layers.

For every method usable here, the bf16 model is quantized with its defaults and saved with
``qk.save``; then:

* checkpoint ratio: bytes of the folder's ``*.safetensors`` files over the bf16 folder's;
* layer ratio: bytes of the tensors under each quantized linear layer's name (packed weights,
  scales, zero points, group indices, packing-state tensors; not the bias) over those layers' bf16
  weight bytes; bits per weight = 8 x those bytes / the layers' weights (goal for 4-bit methods:
  layer ratio <= 0.30). The layers are every linear layer but ``lm_head``, which stays in float;
* quantize and save seconds.

On a small model the float embeddings and ``lm_head`` dominate the checkpoint, so the script also
builds a model with Llama-2-7B's layer shapes (hidden 4096, MLP 11008, 32 heads) but only
``--seven-b-layers`` decoder layers and a 1024-token vocabulary (random weights, nothing
downloaded), and PROJECTS a full Llama-2-7B checkpoint (32 layers, vocab 32000, untied bf16
embeddings and lm_head) from the measured bytes per decoder layer. That figure is a projection,
not a measurement; it leaves out the safetensors headers.

    .venv/bin/python benchmarks/compression.py --out compression.json [--model DIR] [--methods ...]
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import (
    LLAMA2_7B,
    base_parser,
    benchmark_model,
    calibration_options,
    seven_b_model,
    show,
    write_json,
)

import quantkit as qk
from quantkit import registry
from quantkit.measure import measure, release_memory
from quantkit.models import empty_model, linear_layers, load_float_model

QUICK_METHODS = ["bnb-nf4", "bnb-int8", "torchao-int4"]
FIXED_GROUPS = {"bnb-nf4": 64, "bnb-fp4": 64, "ct-nvfp4": 16, "ct-mxfp4": 32}  # not an option of theirs
GOAL_4BIT = 0.30
COLUMNS = ["method", "bits", "group", "checkpoint x", "layers x", "bits/weight", "4-bit goal", "quantize s",
           "save s", "error"]
SEVEN_B_COLUMNS = ["method", "bits", "group", "layers x", "bits/weight", "projected 7B x", "projected GiB",
                   "quantize s", "error"]


def tensor_bytes(folder: Path) -> dict[str, int]:
    """Bytes of every tensor in a folder's ``*.safetensors`` files, read from their headers."""
    sizes = {}
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        header.pop("__metadata__", None)
        sizes.update({name: end - start for name, (start, end) in
                      ((n, info["data_offsets"]) for n, info in header.items())})
    return sizes


def weights_bytes(folder: Path) -> int:
    """Size on disk of a folder's ``*.safetensors`` files (headers included)."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def prefixed_bytes(sizes: dict[str, int], prefixes: list[str], bias: bool = True) -> int:
    """Bytes of the tensors whose names start with one of ``prefixes`` (biases left out unless ``bias``)."""
    return sum(size for name, size in sizes.items()
               if any(name.startswith(p) for p in prefixes) and (bias or not name.endswith(".bias")))


def quantized_layer_prefixes(model_dir: Path) -> list[str]:
    """``"<name>."`` of every linear layer quantkit quantizes (all but ``lm_head``)."""
    from transformers import AutoConfig

    skeleton = empty_model(AutoConfig.from_pretrained(model_dir))
    return [f"{name}." for name, _ in linear_layers(skeleton, ("lm_head",))]


def method_options(method: str, model_dir: Path) -> dict[str, Any]:
    """Defaults, plus the calibration ids for methods that calibrate."""
    if not registry.get(method).capabilities.needs_calibration:
        return {}
    return calibration_options(model_dir)


def bits_and_group(method: str) -> tuple[int, int | str]:
    """The default weight bits and group size of a method ("row": one scale per output row)."""
    backend = registry.get(method)
    defaults = backend.options_type()
    group = getattr(defaults, "group_size", None) or FIXED_GROUPS.get(method, "row")
    return getattr(defaults, "bits", backend.capabilities.bits[0]), group


def measure_method(method: str, model_dir: Path, work: Path, reference: dict[str, Any]) -> dict[str, Any]:
    """Quantize and save with one method; sizes against the bf16 ``reference``."""
    bits, group = bits_and_group(method)
    row: dict[str, Any] = {"method": method, "bits": bits, "group_size": group}
    try:
        with measure() as quantizing:
            model = qk.quantize(model_dir, method, **method_options(method, model_dir))
        with measure() as saving:
            folder = qk.save(model, work / method)
        del model
    except Exception as exc:  # noqa: BLE001 - a failing method is a row, not a crash
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return row
    finally:
        release_memory()
    sizes = tensor_bytes(folder)
    row.update(quantize_s=quantizing.seconds, save_s=saving.seconds,
               checkpoint_bytes=weights_bytes(folder), bf16_checkpoint_bytes=reference["checkpoint_bytes"],
               layer_bytes=prefixed_bytes(sizes, reference["prefixes"], bias=False),
               layer_bf16_bytes=reference["layer_bytes"], layer_params=reference["layer_params"])
    row["checkpoint_ratio"] = row["checkpoint_bytes"] / row["bf16_checkpoint_bytes"]
    row["layer_ratio"] = row["layer_bytes"] / row["layer_bf16_bytes"]
    row["bits_per_weight"] = 8 * row["layer_bytes"] / row["layer_params"]
    row["goal_met"] = row["layer_ratio"] <= GOAL_4BIT if bits == 4 else None
    row["decoder_layer_bytes"] = per_decoder_layer(sizes, reference["layers"])
    return row


def per_decoder_layer(sizes: dict[str, int], layers: int) -> float:
    """Mean bytes of one decoder layer (``model.layers.<i>.*``), quantized linears and norms."""
    return sum(prefixed_bytes(sizes, [f"model.layers.{i}."]) for i in range(layers)) / layers


def bf16_reference(model_dir: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    """The model saved in bf16 (with its tokenizer) and its sizes."""
    folder = qk.save(load_float_model(model_dir, dtype=torch.bfloat16), work / "bf16")
    release_memory()
    sizes = tensor_bytes(folder)
    prefixes = quantized_layer_prefixes(folder)
    layer_bytes = prefixed_bytes(sizes, prefixes, bias=False)
    layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    return folder, {"checkpoint_bytes": weights_bytes(folder), "layer_bytes": layer_bytes,
                    "layer_params": layer_bytes // 2, "prefixes": prefixes, "layers": layers,
                    "decoder_layer_bytes": per_decoder_layer(sizes, layers)}


def project_7b(row: dict[str, Any], reference: dict[str, Any]) -> None:
    """Add the projected full Llama-2-7B checkpoint (bf16 embeddings, lm_head and final norm)."""
    shape = LLAMA2_7B
    float_parts = 2 * (2 * shape.vocab * shape.hidden + shape.hidden)
    row["projected_bytes"] = shape.layers * row["decoder_layer_bytes"] + float_parts
    row["projected_bf16_bytes"] = shape.layers * reference["decoder_layer_bytes"] + float_parts
    row["projected_ratio"] = row["projected_bytes"] / row["projected_bf16_bytes"]


def run(model_dir: Path, methods: list[str], work: Path, seven_b: bool) -> tuple[list[dict[str, Any]], dict]:
    """Every method's row on one model (and the 7B projection when ``seven_b``), and the reference."""
    bf16_dir, reference = bf16_reference(model_dir, work)
    rows = []
    for method in methods:
        row = measure_method(method, bf16_dir, work, reference)
        if seven_b and "error" not in row:
            project_7b(row, reference)
        rows.append(row)
        print(f"{method}: {row.get('layer_ratio', row.get('error'))}", flush=True)
    return rows, {k: v for k, v in reference.items() if k != "prefixes"}


def table_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"method": row["method"], "bits": row["bits"], "group": row["group_size"],
            "checkpoint x": row.get("checkpoint_ratio"), "layers x": row.get("layer_ratio"),
            "bits/weight": row.get("bits_per_weight"), "4-bit goal": row.get("goal_met"),
            "quantize s": row.get("quantize_s"), "save s": row.get("save_s"), "error": row.get("error"),
            "projected 7B x": row.get("projected_ratio"),
            "projected GiB": row["projected_bytes"] / 2**30 if "projected_bytes" in row else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seven-b-layers", type=int, default=None,
                        help="decoder layers of the Llama-2-7B-shaped model (default 1; 0 skips it; "
                             "--quick skips it)")
    args = parser.parse_args(argv)
    usable = [r["method"] for r in qk.methods() if r["usable"]]
    methods = args.methods or (QUICK_METHODS if args.quick else usable)
    seven_b = args.seven_b_layers if args.seven_b_layers is not None else (0 if args.quick else 1)
    payload: dict[str, Any] = {"benchmark": "compression", "goal_4bit_layer_ratio": GOAL_4BIT}
    with tempfile.TemporaryDirectory(prefix="quantkit-compression-") as tmp:
        work = Path(tmp)
        model_dir, about = benchmark_model(args, work)
        rows, reference = run(model_dir, methods, work / "model", seven_b=False)
        title = f"checkpoint size over bf16 (4-bit goal: layers <= {GOAL_4BIT}); model: {about}"
        tables = [show([table_row(r) for r in rows], COLUMNS, title)]
        payload["model"] = {"about": about, "bf16": reference, "rows": rows}
        if seven_b:
            folder, shape, about = seven_b_model(work, seven_b)
            rows, reference = run(folder, methods, work / "7b", seven_b=True)
            title = (f"{about}; 'projected 7B' = a full Llama-2-7B (32 layers, vocab 32000, bf16 "
                     "embeddings and lm_head) projected from the measured bytes per decoder layer")
            tables.append(show([table_row(r) for r in rows], SEVEN_B_COLUMNS, title))
            payload["llama2_7b_layers"] = {"about": about, "shape": shape.__dict__, "bf16": reference,
                                           "rows": rows}
    payload["tables"] = tables
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
