"""Tiny, locally built models for tests, demos and benchmarks (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_VOCAB = 512


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A 2-layer Llama with random weights (hidden 128, MLP 256, vocab 512)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(dtype).eval()


def tiny_gpt2(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A 2-layer GPT-2 (Conv1D layers) with random weights (width 128, vocab 512)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=TINY_VOCAB, n_embd=128, n_layer=2, n_head=4, n_positions=256,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).to(dtype).eval()


TINY_MODELS = {"llama": tiny_llama, "gpt2": tiny_gpt2}


def save_tiny(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny model of ``kind`` ("llama" or "gpt2") and save it as safetensors."""
    folder = Path(folder)
    TINY_MODELS[kind](seed).save_pretrained(folder)
    return folder


def sample_input_ids(batch: int = 2, length: int = 16, seed: int = 1) -> torch.Tensor:
    """Deterministic token ids for comparing logits."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY_VOCAB, (batch, length), generator=generator)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Frobenius norm of the difference over the norm of ``expected``."""
    actual, expected = actual.float(), expected.float()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-12))


@torch.no_grad()
def logits(model, input_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``input_ids`` (default: ``sample_input_ids()``), as float32 on CPU."""
    ids = sample_input_ids() if input_ids is None else input_ids
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device)).logits.float().cpu()
