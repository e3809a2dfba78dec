"""The main job on a model built locally: quantize with every usable method, save, reload,
dequantize, and print one table of error, size and time (no download)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.utils.logging import disable_progress_bar, enable_progress_bar

from quantkit import api, catalog, registry
from quantkit.formats import folder_size
from quantkit.models import load_float_model
from quantkit.table import Table
from quantkit.testing import logits, relative_error, sample_input_ids

COLUMNS = ("method", "logit err", "size vs bf16", "quantize s", "reload exact", "dequant err", "error")


def demo_llama(seed: int = 0):
    """A small Llama (about 17M parameters, random weights) built here, not downloaded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=4096, hidden_size=512, intermediate_size=1536,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                         max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def measure(method: str, model_dir: Path, work: Path, reference: torch.Tensor,
            ids: torch.Tensor, bf16_bytes: int, options: dict[str, Any]) -> dict[str, Any]:
    """Quantize, save, reload and dequantize with one method; return its row."""
    row: dict[str, Any] = {"method": method}
    try:
        start = time.perf_counter()
        quantized = api.quantize(model_dir, method, **options)
        row["quantize s"] = time.perf_counter() - start
        q_logits = logits(quantized, ids)
        row["logit err"] = relative_error(q_logits, reference)
        out = api.save(quantized, work / method)
        row["size vs bf16"] = folder_size(out) / bf16_bytes
        row["reload exact"] = bool(torch.equal(logits(api.load(out), ids), q_logits))
        row["dequant err"] = relative_error(logits(api.dequantize(quantized), ids), q_logits)
    except Exception as exc:  # noqa: BLE001 - a failing method is a row, not a crash
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return row


def demo_options(method: str) -> dict[str, Any]:
    """Calibrated methods get 16 windows of 64 token ids (the demo model has no tokenizer)."""
    if not registry.get(method).capabilities.needs_calibration:
        return {}
    return {"calibration": sample_input_ids(batch=16, length=64, seed=2), "n_samples": 16, "seq_len": 64}


def run(methods: list[str] | None = None) -> Table:
    """Run the demo on a small Llama and return the table."""
    usable = [r["method"] for r in catalog.methods() if r["usable"]]
    methods = methods or usable
    ids = sample_input_ids(batch=2, length=32, seed=1)
    with tempfile.TemporaryDirectory(prefix="quantkit-demo-") as tmp:
        work = Path(tmp)
        demo_llama().to(torch.bfloat16).save_pretrained(work / "bf16")
        bf16_bytes = folder_size(work / "bf16")
        reference = logits(load_float_model(work / "bf16"), ids)
        disable_progress_bar()  # one bar across methods instead of one per weight load
        try:
            rows = [measure(m, work / "bf16", work, reference, ids, bf16_bytes, demo_options(m))
                    for m in tqdm(methods, desc="methods", unit="method")]
        finally:
            enable_progress_bar()
    return Table(rows, COLUMNS, title="quantkit demo: a 17M-parameter Llama (random weights, bf16)")
