"""Calibration data: texts, a text file, a dataset, or token tensors -> token batches.

Deterministic: the same data, options and tokenizer give the same batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quantkit.errors import CalibrationError
from quantkit.models import ModelSource
from quantkit.spec import Options
from quantkit.text_data import DatasetSpec, texts

HOW_TO = (
    "Pass calibration= as a list of strings, a path to a .txt file, "
    "qk.calibration.dataset(name, split=..., column=...), a datasets.Dataset, or token ids "
    "(a LongTensor [n, length] or a list of 1-D LongTensors); e.g. "
    "qk.quantize(model, 'gptq', calibration=['some text', ...], tokenizer=tok)."
)
MIN_TOKENS = 8


def dataset(name: str, split: str = "train", column: str = "text", config: str | None = None,
            data_files: Any = None) -> DatasetSpec:
    """Name a Hugging Face dataset for ``calibration=`` (needs the ``datasets`` package)."""
    return DatasetSpec(name, split, column, config, data_files)


@dataclass
class CalibrationOptions(Options):
    """Options of methods that calibrate on data.

    calibration: the data (see HOW_TO).   tokenizer: defaults to the model folder's tokenizer.
    n_samples: how many sequences.   seq_len: tokens per sequence.   seed: which windows are drawn.
    """

    calibration: Any = None
    tokenizer: Any = None
    n_samples: int = 128
    seq_len: int = 512
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        for name in ("n_samples", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CalibrationError(f"{name}={value!r} must be a positive integer.")
        if self.seq_len < MIN_TOKENS:
            raise CalibrationError(f"seq_len={self.seq_len} is too short; use at least {MIN_TOKENS}.")

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["calibration"] = describe(self.calibration)
        out["tokenizer"] = getattr(self.tokenizer, "name_or_path", None) if self.tokenizer else None
        return out


def describe(data: Any) -> str | None:
    """A short, JSON-friendly description of calibration data (for quantkit.json)."""
    if data is None:
        return None
    if isinstance(data, (str, Path)):
        return f"file {data}"
    if isinstance(data, DatasetSpec):
        return data.describe()
    if isinstance(data, torch.Tensor):
        return f"token ids {tuple(data.shape)}"
    return f"{type(data).__name__} of {len(data)}" if hasattr(data, "__len__") else type(data).__name__


def _token_rows(data: Any) -> list[torch.Tensor] | None:
    """Token ids given directly, as 1-D LongTensors; None when ``data`` is not token ids."""
    if isinstance(data, torch.Tensor):
        rows = [data] if data.dim() == 1 else list(data)
    elif isinstance(data, Sequence) and data and all(isinstance(t, torch.Tensor) for t in data):
        rows = [t.reshape(-1) for t in data]
    else:
        return None
    if not all(not r.is_floating_point() and r.dim() == 1 for r in rows):
        raise CalibrationError("token ids must be integer tensors of shape [length] or [n, length].")
    return [r.long() for r in rows]


def _tokenizer(options: CalibrationOptions, source: ModelSource):
    if options.tokenizer is not None:
        return options.tokenizer
    folder = source.path or getattr(source.given, "name_or_path", None)
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - any failure means "no tokenizer there"
        raise CalibrationError(
            f"calibration text needs a tokenizer and none was found with the model ({folder!r}). "
            "Pass tokenizer=AutoTokenizer.from_pretrained(...), or pass token ids."
        ) from exc


def _windows(stream: torch.Tensor, n_samples: int, seq_len: int, seed: int) -> list[torch.Tensor]:
    """``n_samples`` windows of ``seq_len`` tokens at seeded random offsets in ``stream``."""
    if stream.numel() < MIN_TOKENS:
        raise CalibrationError(f"the calibration data has only {stream.numel()} tokens. {HOW_TO}")
    if stream.numel() <= seq_len:
        warnings.warn(f"calibration data has {stream.numel()} tokens, fewer than seq_len={seq_len}: "
                      "using it as a single sample", stacklevel=3)
        return [stream]
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - seq_len + 1, (n_samples,), generator=generator)
    return [stream[s:s + seq_len].clone() for s in starts.tolist()]


def calibration_batches(options: CalibrationOptions, source: ModelSource) -> list[torch.Tensor]:
    """The calibration sequences for a method: 1-D LongTensors of at most ``seq_len`` tokens."""
    data = options.calibration
    if data is None or (hasattr(data, "__len__") and len(data) == 0):
        raise CalibrationError(f"this method needs calibration data and got none. {HOW_TO}")
    rows = _token_rows(data)
    if rows is not None:
        rows = [r[: options.seq_len] for r in rows[: options.n_samples] if r.numel() > 0]
    else:
        tokenizer = _tokenizer(options, source)
        separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids: list[int] = []
        for text in texts(data, "calibration", HOW_TO, CalibrationError):
            ids += tokenizer(text, add_special_tokens=False)["input_ids"] + separator
        rows = _windows(torch.tensor(ids, dtype=torch.long), options.n_samples, options.seq_len, options.seed)
    _check_vocab(rows, source)
    return rows


def _check_vocab(rows: list[torch.Tensor], source: ModelSource) -> None:
    vocab = getattr(source.config, "vocab_size", None)
    top = max(int(r.max()) for r in rows)
    if vocab and top >= vocab:
        raise CalibrationError(
            f"calibration token id {top} is outside the model's vocabulary ({vocab} tokens): the "
            "tokenizer does not belong to this model. Pass the model's own tokenizer."
        )
