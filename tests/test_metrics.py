"""Each compare metric on tiny real models, checked against a hand computation."""

from __future__ import annotations

import json
import math
import struct
import time

import pytest
import torch
import torch.nn.functional as F

import quantkit as qk
from quantkit.footprint import bits_per_weight, memory_bytes, weight_file_bytes
from quantkit.latency import measure_latency
from quantkit.measure import measure
from quantkit.models import linear_layers, load_float_model
from quantkit.quality import Reference, Window, evaluate, target_count, windows
from quantkit.testing import sample_input_ids, tiny_llama


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return sample_input_ids(batch=1, length=200, seed=3)[0]


def test_strided_windows_score_every_token_once():
    plan = windows(10, 4, 2)
    assert plan == [Window(0, 4, 1), Window(2, 6, 4), Window(4, 8, 6), Window(6, 10, 8)]
    scored = [t for w in plan for t in range(w.first_target, w.end)]
    assert scored == list(range(1, 10))
    assert target_count(plan) == 9


def test_disjoint_windows_skip_each_windows_first_token():
    assert windows(10, 4, 4) == [Window(0, 4, 1), Window(4, 8, 5), Window(8, 10, 9)]
    assert windows(5, 8, 4) == [Window(0, 5, 1)]


def test_perplexity_of_one_window_is_exp_cross_entropy(tmp_path, ids):
    model = tiny_llama()
    result = evaluate(model, ids, windows(ids.numel(), ids.numel(), ids.numel()))
    with torch.no_grad():
        logits = model(ids.unsqueeze(0)).logits[0]
    expected = math.exp(F.cross_entropy(logits[:-1].float(), ids[1:]).item())
    assert result.tokens == ids.numel() - 1
    assert result.perplexity == pytest.approx(expected, rel=1e-5)


def test_strided_perplexity_matches_transformers_loss_with_masked_labels(ids):
    """The Hugging Face recipe: labels -100 except the new tokens of each window."""
    model = tiny_llama()
    length, stride = 64, 32
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + length, ids.numel())
        chunk = ids[begin:end].unsqueeze(0)
        labels = chunk.clone()
        labels[:, : -(end - prev_end)] = -100
        with torch.no_grad():
            loss = model(chunk, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())
        nll, count, prev_end = nll + loss.item() * scored, count + scored, end
        if end == ids.numel():
            break
    result = evaluate(model, ids, windows(ids.numel(), length, stride))
    assert result.tokens == count
    assert result.perplexity == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_kl_and_top1_against_a_recorded_reference(tmp_path, ids):
    plan = windows(ids.numel(), ids.numel(), ids.numel())
    reference = Reference(tmp_path / "ref.npy", plan, vocab=512)
    base, other = tiny_llama(seed=0), tiny_llama(seed=0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02 * torch.randn_like(p))
    evaluate(base, ids, plan, record=reference)
    same = evaluate(base, ids, plan, reference=reference)
    assert same.kl == pytest.approx(0.0, abs=1e-6) and same.top1 == 1.0

    result = evaluate(other, ids, plan, reference=reference)
    with torch.no_grad():
        p = torch.log_softmax(base(ids.unsqueeze(0)).logits[0, :-1].float(), -1)
        q = torch.log_softmax(other(ids.unsqueeze(0)).logits[0, :-1].float(), -1)
    expected_kl = F.kl_div(q, p, log_target=True, reduction="sum").item() / p.shape[0]
    expected_top1 = (p.argmax(-1) == q.argmax(-1)).float().mean().item()
    assert result.kl == pytest.approx(expected_kl, rel=1e-4)
    assert result.top1 == pytest.approx(expected_top1)
    assert result.kl > 0 and result.top1 < 1


def test_memory_bytes_of_a_float_model_is_its_tensor_bytes():
    model = tiny_llama()
    expected = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert memory_bytes(model) == expected
    assert memory_bytes(model.to(torch.bfloat16)) < expected * 0.51


def _write_safetensors(path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    """A safetensors file from (dtype, shape, bytes) per name, zero-filled."""
    header, offset = {}, 0
    for name, (dtype, shape, size) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def test_bits_per_weight_counts_every_tensor_of_a_layer_but_its_bias(tmp_path):
    _write_safetensors(tmp_path / "model.safetensors", {
        "layers.0.proj.qweight": ("I32", [16, 64], 16 * 64 * 4),     # 4-bit: 128 x 64 weights packed
        "layers.0.proj.scales": ("F16", [1, 64], 128),
        "layers.0.proj.qzeros": ("I32", [1, 8], 32),
        "layers.0.proj.bias": ("F16", [64], 128),
        "embed.weight": ("BF16", [100, 128], 100 * 128 * 2),
    })
    weights = 128 * 64
    assert bits_per_weight(tmp_path, {"layers.0.proj": weights}) == 8 * (4096 + 128 + 32) / weights
    assert weight_file_bytes(tmp_path) == (tmp_path / "model.safetensors").stat().st_size


def test_bits_per_weight_of_real_checkpoints(model_dirs, tmp_path):
    float_model = load_float_model(model_dirs["llama"])
    layers = {n: m.weight.numel() for n, m in linear_layers(float_model, ("lm_head",))}
    float_model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert bits_per_weight(tmp_path / "bf16", layers) == 16
    # HQQ 4-bit, groups of 64, fp32 model: 4 bits + an fp32 scale and zero per 64 weights = 5.0
    hqq = qk.save(qk.quantize(model_dirs["llama"], "hqq", bits=4, group_size=64), tmp_path / "hqq")
    assert bits_per_weight(hqq, layers) == pytest.approx(5.0)


def test_latency_arithmetic_on_a_model_slowed_by_a_known_delay():
    model = tiny_llama()
    delay = 0.02
    model.register_forward_pre_hook(lambda *_: time.sleep(delay))
    prompt = sample_input_ids(batch=1, length=10, seed=0)[0]
    latency = measure_latency(model, prompt, batch_size=2, decode_tokens=5, repeats=2)
    # one forward per prefill (2 x 10 tokens) and one per decode step (2 tokens each)
    assert delay * 1000 / 20 <= latency.prefill_ms_per_token < (delay + 0.05) * 1000 / 20
    assert 2 / (delay + 0.05) < latency.decode_tokens_per_s <= 2 / delay
    assert (latency.batch_size, latency.prompt_tokens, latency.decode_tokens) == (2, 10, 5)


def test_peak_rss_is_that_of_the_block():
    with measure() as big:
        block = torch.ones(300 * 1024 * 1024, dtype=torch.uint8)
        del block
    with measure() as small:
        torch.ones(1024, dtype=torch.uint8)
    assert big.peak_rss_bytes - small.peak_rss_bytes > 250 * 1024 * 1024
    assert big.seconds >= 0 and small.cuda_peak_bytes is None
