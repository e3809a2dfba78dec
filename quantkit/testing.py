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
TINY_CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"


def tiny_corpus() -> list[str]:
    """A few lines of English shipped with quantkit, for tokenizers and calibration in tests."""
    return [line for line in TINY_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def tiny_tokenizer():
    """A byte-level BPE tokenizer with TINY_VOCAB tokens, trained here on ``tiny_corpus()``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")


def save_tiny(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny model of ``kind`` ("llama" or "gpt2") and save it, with a tokenizer."""
    folder = Path(folder)
    model = TINY_MODELS[kind](seed)
    tokenizer = tiny_tokenizer()
    model.config.bos_token_id = model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
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
