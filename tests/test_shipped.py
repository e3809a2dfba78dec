"""The shipped demo model and texts: load offline with stock transformers, trained, held out."""

from __future__ import annotations

import math
import re

import pytest
import torch

from quantkit import shipped

# Measured when the model was trained: see quantkit/data/demo_model/README.md. The bound leaves
# room for other CPUs' float rounding, not for a worse model.
FIRST_TOKENS = 4096
PERPLEXITY_MEASURED = 74.4  # first 4096 tokens, windows of 512, float32 math
PERPLEXITY_BOUND = 85.0
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shipped.demo_model_path(), local_files_only=True)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(shipped.demo_model_path(), local_files_only=True,
                                                dtype=torch.float32).eval()


def perplexity(model, ids: list[int], window: int) -> float:
    rows = torch.tensor(ids[: len(ids) // window * window]).view(-1, window)
    with torch.no_grad():
        logits = model(input_ids=rows).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             rows[:, 1:].reshape(-1))
    return math.exp(float(loss))


def windows(text: str, width: int, step: int) -> set[int]:
    return {hash(text[i:i + width]) for i in range(0, len(text) - width + 1, step)}


def shares_a_passage(a: str, b: str, length: int = 200) -> bool:
    """Whether ``a`` and ``b`` share a passage of ``length`` characters (every window of a half)."""
    half = length // 2
    return bool(windows(a, half, 1) & windows(b, half, half))


def test_paths_and_readers():
    folder = shipped.demo_model_path()
    assert folder.is_dir() and (folder / "config.json").is_file() and (folder / "README.md").is_file()
    assert shipped.eval_text() == shipped.eval_text_path().read_text(encoding="utf-8")
    assert shipped.calibration_text() == shipped.calibration_text_path().read_text(encoding="utf-8")


def test_folder_is_small_and_safetensors_only():
    from safetensors import safe_open

    files = [path for path in shipped.demo_model_path().rglob("*") if path.is_file()]
    names = {path.name for path in files}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not [name for name in names if name.endswith(PICKLE_SUFFIXES)]
    assert sum(path.stat().st_size for path in files) <= 25 * 2**20
    with safe_open(shipped.demo_model_path() / "model.safetensors", framework="pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}


def test_loads_with_stock_transformers_as_an_untied_llama(model, tokenizer):
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert len(tokenizer) == model.config.vocab_size
    # group size 128 (GPTQ, AWQ, ...) divides every linear layer's input size
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 7 * model.config.num_hidden_layers + 1
    assert all(m.in_features % 128 == 0 and m.out_features % 64 == 0 for m in linears)


def test_model_is_trained_far_beyond_chance(model, tokenizer):
    ids = tokenizer(shipped.eval_text(), add_special_tokens=False)["input_ids"][:FIRST_TOKENS]
    window = model.config.max_position_embeddings
    ppl = perplexity(model, ids, window)
    assert ppl < PERPLEXITY_BOUND, f"perplexity {ppl:.2f} on the eval text (measured {PERPLEXITY_MEASURED})"
    assert ppl * 5 < model.config.vocab_size
    # an untrained model of the same shape is near chance (about the vocabulary size)
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shipped.demo_model_path()))
    assert perplexity(untrained.eval(), ids[:1024], window) > 10 * ppl


def test_tokenizer_round_trips_text(tokenizer):
    for text in (shipped.eval_text()[:20000], shipped.calibration_text()[:20000]):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert len(text) / len(ids) > 2.5  # a real subword vocabulary, not bytes


@pytest.mark.parametrize("name, min_bytes", [("eval", 100_000), ("calibration", 30_000)])
def test_texts_are_english_of_the_promised_size(name, min_bytes):
    path = getattr(shipped, f"{name}_text_path")()
    text = path.read_text(encoding="utf-8")
    assert min_bytes <= path.stat().st_size < 400_000
    words = re.findall(r"[a-z]+", text.lower())
    assert len(words) > min_bytes / 8
    common = sum(word in {"the", "and", "of", "to", "a", "in", "was", "she", "it", "her"} for word in words)
    assert common / len(words) > 0.15
    assert sum(ch.isascii() for ch in text) / len(text) > 0.99


def test_eval_and_calibration_texts_do_not_overlap():
    eval_text, calibration_text = shipped.eval_text(), shipped.calibration_text()
    assert not shares_a_passage(eval_text, calibration_text)
    assert shares_a_passage(eval_text, eval_text[5000:5300])  # the check itself finds overlap
