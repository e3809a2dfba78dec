"""The evaluation text of ``compare`` as one stream of token ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from quantkit.errors import EvalDataError
from quantkit.text_data import texts

HOW_TO = (
    "Pass eval_text= as the text itself, a path to a .txt file, a list of strings, "
    "qk.calibration.dataset(name, split=..., column=...), a datasets.Dataset, or token ids "
    "(a 1-D LongTensor); None uses the held-out text shipped with quantkit."
)
MIN_TOKENS = 16


def default_text_path() -> Path:
    from quantkit import shipped

    return shipped.eval_text_path()


def is_text_file(data: Any) -> bool:
    """True when ``data`` is a path (str or Path) to an existing file, not text itself."""
    if isinstance(data, str) and ("\n" in data or len(data) > 1024):
        return False
    try:
        return isinstance(data, (str, Path)) and Path(data).is_file()
    except OSError:
        return False


def _as_texts(data: Any) -> list[str]:
    if data is None:
        return [default_text_path().read_text(encoding="utf-8")]
    if isinstance(data, str) and not is_text_file(data) and ("\n" in data or len(data) > 200):
        return [data]  # the text itself, not a path
    return texts(data, "eval_text", HOW_TO, EvalDataError)


def eval_token_ids(data: Any, tokenizer: Any, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids of the eval text (documents joined by the tokenizer's end-of-text token)."""
    if isinstance(data, torch.Tensor):
        if data.is_floating_point() or data.dim() != 1:
            raise EvalDataError(f"eval_text token ids must be a 1-D integer tensor, not {tuple(data.shape)} "
                                f"{data.dtype}. {HOW_TO}")
        ids = data.long()
    else:
        if tokenizer is None:
            raise EvalDataError("eval_text is text, and no tokenizer was found beside the model. Pass "
                                "tokenizer=AutoTokenizer.from_pretrained(...) or token ids.")
        separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        stream: list[int] = []
        for text in _as_texts(data):
            stream += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + separator
        ids = torch.tensor(stream[:-len(separator)] if separator else stream, dtype=torch.long)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if ids.numel() < MIN_TOKENS:
        raise EvalDataError(f"the eval text has {ids.numel()} tokens; perplexity needs at least "
                            f"{MIN_TOKENS}. {HOW_TO}")
    return ids
