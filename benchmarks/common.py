"""What the benchmark scripts share: arguments, the models they run on, calibration ids, JSON output."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers.utils.logging import disable_progress_bar

from quantkit.shipped import calibration_text, demo_model_path
from quantkit.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
disable_progress_bar()  # one "Loading weights" bar per load would bury the tables

PACKAGES = ("quantkit", "torch", "transformers", "safetensors", "accelerate", "bitsandbytes", "hqq",
            "torchao", "compressed-tensors", "gptqmodel", "optimum")
CALIBRATION_SEED = 2
CALIBRATION = {"n_samples": 16, "seq_len": 64}  # what gptq / awq calibrate on in both scripts


@dataclass(frozen=True)
class LlamaShape:
    """The shape of a Llama built here with random weights (nothing is downloaded)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    def config(self):
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=self.vocab, hidden_size=self.hidden,
                           intermediate_size=self.intermediate, num_hidden_layers=self.layers,
                           num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                           max_position_embeddings=512,
                           tie_word_embeddings=False)


LLAMA2_7B = LlamaShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000)


def base_parser(description: str) -> argparse.ArgumentParser:
    """--out, --model, --quick and --methods, which both scripts take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--model", type=Path, default=None,
                        help="local HF model folder (default: quantkit's shipped demo model)")
    parser.add_argument("--quick", action="store_true", help="a tiny model and a few methods (seconds)")
    parser.add_argument("--methods", nargs="+", default=None, help="methods to run (default: see --help)")
    return parser


def save_llama(folder: Path, shape: LlamaShape, seed: int = 0) -> Path:
    """A bf16 Llama of ``shape`` with random weights and quantkit's tiny tokenizer, saved to ``folder``."""
    from transformers import LlamaForCausalLM

    from quantkit.testing import tiny_tokenizer

    torch.manual_seed(seed)
    model = LlamaForCausalLM(shape.config()).to(torch.bfloat16).eval()
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def benchmark_model(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """The model folder to run on and a line saying what it is: --model, else with --quick a tiny
    Llama built here, else quantkit's shipped demo model."""
    if args.model is not None:
        return args.model, f"given folder {args.model}"
    if args.quick:
        from quantkit.testing import save_tiny

        return save_tiny("llama", work / "tiny-llama"), "tiny random Llama (quantkit.testing, fp32)"
    return demo_model_path(), "quantkit's shipped demo model (quantkit/data/demo_model)"


def seven_b_model(work: Path, layers: int) -> tuple[Path, LlamaShape, str]:
    """A random Llama with Llama-2-7B's layer shapes but ``layers`` decoder layers and a 1024-token
    vocabulary, saved under ``work``: its folder, its shape and a line saying what it is."""
    shape = replace(LLAMA2_7B, layers=layers, vocab=1024)
    about = f"random Llama with Llama-2-7B layer shapes, {layers} decoder layer(s), vocab {shape.vocab}"
    return save_llama(work / "llama2-7b-layers", shape), shape, about


def calibration_options(model_dir: Path) -> dict[str, Any]:
    """``calibration=`` (``calibration_ids``), ``n_samples`` and ``seq_len`` for gptq / awq."""
    return {"calibration": calibration_ids(model_dir, **CALIBRATION), **CALIBRATION}


def calibration_ids(model_dir: Path, n_samples: int, seq_len: int) -> torch.Tensor:
    """The token ids [n_samples, seq_len] both sides of a comparison calibrate on: quantkit's shipped
    calibration text through the model's tokenizer, cut into seeded windows as
    ``qk.quantize(..., calibration=text)`` would; random ids where the model has no tokenizer."""
    from quantkit.calibration import CalibrationOptions, calibration_batches
    from quantkit.models import ModelSource
    from quantkit.testing import sample_input_ids

    text = calibration_text()
    if (model_dir / "tokenizer.json").is_file() or (model_dir / "tokenizer.model").is_file():
        options = CalibrationOptions(calibration=[text], n_samples=n_samples, seq_len=seq_len,
                                     seed=CALIBRATION_SEED)
        rows = calibration_batches(options, ModelSource(path=model_dir))
        if len(rows) == n_samples and all(r.numel() == seq_len for r in rows):
            return torch.stack(rows)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    return sample_input_ids(batch=n_samples, length=seq_len, seed=CALIBRATION_SEED) % vocab


def environment() -> dict[str, Any]:
    """Where and with what a benchmark ran: date, CPU, cores, RAM, Python and package versions."""
    from quantkit import hardware

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_name(), "hardware": str(hardware()), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "versions": versions}


def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), else what platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with an ``environment`` entry added, as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2) + "\n")


def show(rows: list[dict[str, Any]], columns: list[str], title: str) -> str:
    """Print ``rows`` as a text table and return the text."""
    text = Table(rows, columns, title=title).to_text()
    print(text, flush=True)
    return text
