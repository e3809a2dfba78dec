"""Latency at a fixed batch size: prefill milliseconds per token and decode tokens per second."""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Latency:
    """Medians over ``repeats`` timed runs, after one warm-up run (kernels compile or repack there)."""

    prefill_ms_per_token: float
    decode_tokens_per_s: float
    batch_size: int
    prompt_tokens: int
    decode_tokens: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prefill(model: nn.Module, prompt: torch.Tensor):
    return model(prompt, use_cache=True)


def _cache_argument(model: nn.Module) -> str:
    """transformers >= 5.2x names the KV cache ``cache``; earlier releases ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _decode(model: nn.Module, out, steps: int) -> None:
    name = _cache_argument(model)
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(steps):
        out = model(token, use_cache=True, **{name: _cache(out)})
        token = out.logits[:, -1:].argmax(-1)


def measure_latency(model: nn.Module, prompt_ids: torch.Tensor, batch_size: int = 1,
                    decode_tokens: int = 32, repeats: int = 3) -> Latency:
    """Time a forward pass over the prompt (prefill) and ``decode_tokens`` greedy cached steps.

    prefill ms/token = median prefill seconds * 1000 / (batch_size * prompt tokens);
    decode tokens/s = batch_size * decode_tokens / median decode seconds (the prefill excluded).
    """
    device = next(model.parameters()).device
    prompt = prompt_ids.reshape(1, -1).expand(batch_size, -1).contiguous().to(device)
    prefill_s, decode_s = [], []
    with torch.inference_mode():
        _decode(model, _prefill(model, prompt), min(decode_tokens, 2))  # warm-up
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            out = _prefill(model, prompt)
            _sync(device)
            prefill_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            _decode(model, out, decode_tokens)
            _sync(device)
            decode_s.append(time.perf_counter() - start)
    tokens = prompt.shape[1]
    return Latency(
        prefill_ms_per_token=statistics.median(prefill_s) * 1000 / (batch_size * tokens),
        decode_tokens_per_s=batch_size * decode_tokens / statistics.median(decode_s),
        batch_size=batch_size, prompt_tokens=tokens, decode_tokens=decode_tokens,
    )
