"""Files shipped inside quantkit: a small trained model and public-domain English texts.

The demo model (a 6.8M-parameter Llama with its tokenizer, bfloat16) loads offline with stock
transformers; it is a toy for measuring quantization, not for use. The evaluation text (Austen's
Persuasion, Volume I) and the calibration text (Carroll's Alice's Adventures in Wonderland) were
both held out from its training. Provenance and licences: ``quantkit/data/TEXTS.md``; how the
model was trained: ``quantkit/data/demo_model/README.md``.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"


def demo_model_path() -> Path:
    """The folder of the shipped demo model (config, bf16 safetensors, tokenizer)."""
    return DATA / "demo_model"


def eval_text_path() -> Path:
    """The held-out evaluation text (about 215 KB of English prose)."""
    return DATA / "eval_text.txt"


def calibration_text_path() -> Path:
    """The calibration text (about 150 KB of English prose), disjoint from the evaluation text."""
    return DATA / "calibration_text.txt"


def eval_text() -> str:
    """The evaluation text, read as UTF-8."""
    return eval_text_path().read_text(encoding="utf-8")


def calibration_text() -> str:
    """The calibration text, read as UTF-8."""
    return calibration_text_path().read_text(encoding="utf-8")
