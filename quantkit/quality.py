"""Quality metrics on an eval text: strided perplexity, and KL divergence / top-1 agreement
against the float model's next-token distribution at the same positions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Window:
    """Tokens ``[begin, end)`` go through the model; targets ``[first_target, end)`` are scored."""

    begin: int
    end: int
    first_target: int


def windows(n_tokens: int, length: int, stride: int) -> list[Window]:
    """Strided windows over ``n_tokens``: each scores only the tokens not scored before.

    A token is scored once, with ``length - stride`` tokens of context carried over from the
    previous window; the first token of the text (and, when ``stride == length``, of each
    disjoint window) has no context and is not scored, as in Hugging Face's perplexity recipe.
    """
    if not 0 < stride <= length:
        raise ValueError(f"stride={stride} must be between 1 and the window length {length}")
    out, scored_until = [], 1  # token 0 has no context: it is never a target
    for begin in range(0, max(n_tokens - 1, 0), stride):
        end = min(begin + length, n_tokens)
        out.append(Window(begin, end, max(scored_until, begin + 1)))
        scored_until = end
        if end == n_tokens:
            break
    return out


def target_count(plan: list[Window]) -> int:
    return sum(w.end - w.first_target for w in plan)


def window_log_probs(model: nn.Module, ids: torch.Tensor, window: Window) -> torch.Tensor:
    """float32 log-probabilities predicting tokens ``first_target .. end-1``: [targets, vocab]."""
    device = next(model.parameters()).device
    chunk = ids[window.begin:window.end].unsqueeze(0).to(device)
    with torch.inference_mode():
        logits = model(chunk, use_cache=False).logits[0]
    start = window.first_target - window.begin - 1  # logits at position p predict token p + 1
    return torch.log_softmax(logits[start:window.end - window.begin - 1].float(), dim=-1).cpu()


def nll_sum(log_probs: torch.Tensor, ids: torch.Tensor, window: Window) -> float:
    targets = ids[window.first_target:window.end]
    return -float(log_probs.gather(1, targets.unsqueeze(1)).sum())


@dataclass
class QualityResult:
    """Perplexity = exp(mean NLL); KL and top-1 are means over the same scored tokens."""

    tokens: int
    nll: float
    kl: float | None = None
    top1: float | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens)


@dataclass
class Reference:
    """The float model's log-probabilities at every scored token, kept on disk (float32 memmap)."""

    path: Path
    plan: list[Window]
    vocab: int
    _rows: np.ndarray | None = field(default=None, repr=False)

    def open(self, mode: str) -> np.ndarray:
        shape = (target_count(self.plan), self.vocab)
        self._rows = np.lib.format.open_memmap(self.path, mode=mode, dtype=np.float32, shape=shape)
        return self._rows

    def rows(self) -> np.ndarray:
        return self._rows if self._rows is not None else self.open("r")


def evaluate(model: nn.Module, ids: torch.Tensor, plan: list[Window], reference: Reference | None = None,
             record: Reference | None = None, progress=None) -> QualityResult:
    """Score ``model`` on ``ids``; with ``reference``, also KL(float || model) and top-1 agreement.

    ``record`` writes this model's log-probabilities as the reference for later models.
    """
    total_nll, total_kl, agree, row = 0.0, 0.0, 0, 0
    ref_rows = reference.rows() if reference else None
    out_rows = record.open("w+") if record else None
    for window in plan:
        log_probs = window_log_probs(model, ids, window)
        count = log_probs.shape[0]
        total_nll += nll_sum(log_probs, ids, window)
        if out_rows is not None:
            out_rows[row:row + count] = log_probs.numpy()
        if ref_rows is not None:
            ref = torch.from_numpy(np.asarray(ref_rows[row:row + count]))
            total_kl += float((ref.exp() * (ref - log_probs)).sum())
            agree += int((ref.argmax(-1) == log_probs.argmax(-1)).sum())
        row += count
        if progress is not None:
            progress.update(window.end - window.first_target)
    if out_rows is not None:
        out_rows.flush()
    result = QualityResult(tokens=row, nll=total_nll)
    if ref_rows is not None:
        result.kl, result.top1 = total_kl / row, agree / row
    return result
