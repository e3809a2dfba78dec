"""``recommend()``: the guide's cases, properties over any hardware, model size, output, docs, CLI.

Methods this build does not register yet (gptq, awq, compressed-tensors) are registered here as
small Backend subclasses that only *declare* capabilities, taken from the capabilities table in
selection-facts.md. The selector is a pure function of declared capabilities, so these are a real
input, not a mock of a backend's behaviour; a real backend registered under the same name wins.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantkit import registry
from quantkit import selection_rules as rules
from quantkit.backends.base import Backend, Capabilities
from quantkit.errors import NotAModelError, QuantkitError
from quantkit.hardware import Hardware
from quantkit.model_size import model_size, size_from_config
from quantkit.selector import Recommendations, add_cli, recommend
from quantkit.spec import build_options

ROOT = Path(__file__).resolve().parent.parent
FACTS_PATH = ROOT.parent / "shared" / "reference" / rules.FACTS_FILE
BACKEND_LIBRARIES = ("bitsandbytes", "hqq", "torchao", "gptqmodel", "compressed_tensors", "awq", "auto_gptq",
                     "llmcompressor")

A100_40 = Hardware.cuda(capability=(8, 0), memory_gb=40, name="A100")
A100_80 = Hardware.cuda(capability=(8, 0), memory_gb=80, name="A100")
L40 = Hardware.cuda(capability=(8, 9), memory_gb=48, name="L40")
H100 = Hardware.cuda(capability=(9, 0), memory_gb=80, name="H100")
B200 = Hardware.cuda(capability=(10, 0), memory_gb=180, name="B200")
CPU = Hardware.cpu(ram_gb=32)
MAC = Hardware.mps(memory_gb=32)


# -- declared stand-ins for methods other engineers are adding -----------------------------------


class _Declared(Backend):
    """A method known only by its declared capabilities; the selector never calls the contract."""

    description = "declared in tests/test_selector.py"

    def quantize(self, source, options):
        raise NotImplementedError

    def is_quantized_module(self, module):
        raise NotImplementedError

    def dequantize_module(self, module, dtype):
        raise NotImplementedError

    def save(self, model, folder):
        raise NotImplementedError

    def load(self, folder, config, options):
        raise NotImplementedError

    @classmethod
    def owns(cls, quantization_config):
        return False


def declared(name: str, library: str, requirement: str, caps: Capabilities) -> type[Backend]:
    attrs = {"name": name, "library": library, "requirement": requirement, "capabilities": caps}
    return type(f"Declared_{name.replace('-', '_')}", (_Declared,), attrs)


CT = dict(on_the_fly=False, peft_trainable=True, devices=("cpu", "cuda", "rocm"), format="compressed-tensors")
DECLARED = [
    # facts L45: GPTQModel: not on the fly, CPU/CUDA/ROCm/Metal/Intel, no torch.compile, 2/3/4/8, PEFT.
    declared("gptq", "gptqmodel", "gptqmodel>=7.5", Capabilities(
        bits=(2, 3, 4, 8), needs_calibration=True, on_the_fly=False, peft_trainable=True,
        devices=("cpu", "cuda", "rocm", "mps", "xpu"), format="gptq")),
    # facts L46: AWQ: not on the fly, CPU/CUDA/ROCm/Intel, 4-bit, PEFT.
    declared("awq", "awq", "autoawq", Capabilities(
        bits=(4,), needs_calibration=True, on_the_fly=False, peft_trainable=True,
        devices=("cpu", "cuda", "rocm", "xpu"), format="awq")),
    # facts L49 and L51: compressed-tensors schemes; FP8 compute from capability 8.9.
    declared("ct-w4a16", "compressed_tensors", "compressed-tensors>=0.20", Capabilities(bits=(4,), **CT)),
    declared("ct-w8a8", "compressed_tensors", "compressed-tensors>=0.20", Capabilities(bits=(8,), **CT)),
    declared("ct-fp8", "compressed_tensors", "compressed-tensors>=0.20",
             Capabilities(bits=(8,), min_cuda_capability=(8, 9), **CT)),
    declared("ct-nvfp4", "compressed_tensors", "compressed-tensors>=0.20", Capabilities(bits=(4,), **CT)),
]


@pytest.fixture(scope="module", autouse=True)
def declared_methods():
    """Register the stand-ins whose names this build leaves free, for this module only."""
    table = registry.all_methods()
    with pytest.MonkeyPatch.context() as mp:
        for backend in DECLARED:
            if backend.name not in table:
                mp.setitem(registry._methods, backend.name, backend)
                mp.setitem(registry._aliases, backend.name, backend.name)
        yield


def methods_of(recs: Recommendations) -> list[str]:
    return [r.method for r in recs]


# -- the guide's cases -------------------------------------------------------------------------------

GUIDE_CASES = [
    # (kwargs, the first recommendation is one of, {excluded method: words in its reason})
    pytest.param(dict(use_case="fine-tuning", hardware=A100_40, params=7e9), {"bnb-nf4"},
                 {"torchao-int8": "PEFT"}, id="fine-tuning on CUDA: bnb-nf4 first (L17)"),
    pytest.param(dict(use_case="fine-tuning", hardware=CPU, params=1e9), {"bnb-nf4"}, {},
                 id="fine-tuning on CPU: bnb-nf4 first (L17)"),
    pytest.param(dict(use_case="inference", hardware=A100_80, params=8e9, bits=4), {"gptq", "awq"}, {},
                 id="best 4-bit accuracy with calibration: gptq/awq (L15)"),
    pytest.param(dict(use_case="inference", hardware=H100, params=8e9), {"gptq", "awq"}, {},
                 id="calibration allowed on Hopper: gptq/awq still first (L15)"),
    pytest.param(dict(use_case="inference", hardware=A100_80, params=8e9, calibration_ok=False),
                 {"bnb-nf4", "hqq", "torchao-int4"}, {"gptq": "calibration", "awq": "calibration"},
                 id="no calibration: bnb / hqq / torchao (L12-L14)"),
    pytest.param(dict(use_case="inference", hardware=A100_80, params=8e9),
                 {"gptq", "awq"}, {"torchao-fp8": "8.9", "ct-fp8": "8.9"},
                 id="FP8 excluded below capability 8.9 (L51)"),
    pytest.param(dict(use_case="inference", hardware=CPU, params=1e9), {"torchao-int8"}, {},
                 id="CPU inference: torchao (L14, L66)"),
    pytest.param(dict(use_case="inference", hardware=MAC, params=7e9), {"gptq", "bnb-nf4"},
                 {"hqq": "mps", "torchao-int8": "mps"}, id="Apple GPU: only methods declaring mps"),
    pytest.param(dict(use_case="extreme-compression", hardware=A100_80, params=70e9), {"hqq", "gptq"},
                 {"bnb-nf4": "under 4"}, id="under 4 bits: hqq / gptq (L18)"),
    pytest.param(dict(use_case="load-format", hardware=H100, params=8e9), {"ct-fp8"}, {},
                 id="load-format on Hopper: compressed-tensors FP8 (L16, L52)"),
    pytest.param(dict(use_case="load-format", hardware=A100_80, params=8e9), {"ct-w4a16"}, {"ct-fp8": "8.9"},
                 id="load-format on Ampere: compressed-tensors W4A16 (L52)"),
    pytest.param(dict(use_case="load-format", hardware=B200, params=8e9), {"ct-nvfp4"}, {},
                 id="load-format on Blackwell: compressed-tensors NVFP4 (L52)"),
    pytest.param(dict(use_case="inference", hardware=A100_80, params=8e9, need_torch_compile=True),
                 {"bnb-nf4"}, {"gptq": "torch.compile", "ct-fp8": "torch.compile"},
                 id="torch.compile needed: gptq and compressed-tensors excluded (L42-L49)"),
]


@pytest.mark.parametrize("kwargs, first, excluded", GUIDE_CASES)
def test_guide_case(kwargs, first, excluded):
    recs = recommend(**kwargs)
    assert recs, recs.excluded
    assert recs[0].method in first, recs
    for method, words in excluded.items():
        assert method in recs.excluded, (method, methods_of(recs))
        assert words in recs.excluded[method]


def test_fp8_is_listed_from_capability_8_9():
    for hw in (L40, H100):
        listed = methods_of(recommend("inference", hw, params=8e9))
        assert "torchao-fp8" in listed and "ct-fp8" in listed, hw


def test_cpu_recommendations_all_declare_cpu_kernels():
    recs = recommend("inference", CPU, params=1e9)
    backends = registry.all_methods()
    assert recs and all("cpu" in backends[r.method].capabilities.devices for r in recs)


def test_sub_4_bit_answers_carry_a_quality_warning():
    recs = recommend("extreme-compression", A100_80, params=70e9)
    assert {r.method for r in recs[:2]} == {"hqq", "gptq"}
    for r in recs:
        assert r.bits < 4 and any("quality" in w for w in r.warnings), r
    assert recs[0].bits == 3  # the highest sub-4-bit width that fits comes first
    tiny = recommend("inference", A100_80, params=8e9, bits=2)
    assert tiny and all(r.bits == 2 and r.warnings for r in tiny)


def test_fine_tuning_reasons_name_the_qlora_path_and_the_workflow():
    top = recommend("fine-tuning", A100_40, params=7e9)[0]
    text = " ".join(top.reasons)
    assert "QLoRA" in text and "GPTQ" in text and "facts L17" in text
    assert top.options == {"device": "cuda"} and top.bits == 4 and 3 < top.estimated_gb < 4.5


def test_calibrated_methods_report_the_documented_cost():
    gptq = next(r for r in recommend("inference", A100_80, params=8e9) if r.method == "gptq")
    awq = next(r for r in recommend("inference", A100_80, params=8e9) if r.method == "awq")
    assert "about 20 min on one A100" in " ".join(gptq.reasons)
    assert "about 10 min on one A100" in " ".join(awq.reasons)
    big = next(r for r in recommend("inference", B200, params=175e9) if r.method == "gptq")
    assert "about 4.0 h" in " ".join(big.reasons)  # facts L27: ~4 GPU hours for 175B
    bnb = next(r for r in recommend("inference", A100_80, params=8e9) if r.method == "bnb-nf4")
    assert bnb.calibration == "none"


def test_every_reason_kind_is_given():
    for r in recommend("inference", H100, params=8e9):
        kinds = {reason.split(":")[0] for reason in r.reasons}
        assert {"use case", "hardware", "memory", "calibration", "accuracy"} <= kinds, r.reasons


def test_not_installed_is_reported_not_hidden():
    missing = declared("test-missing", "quantkit_no_such_library", "quantkit-no-such-library==0",
                       Capabilities(bits=(4,), devices=("cpu", "cuda")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry._methods, missing.name, missing)
        recs = recommend("inference", CPU, params=1e9)
    rec = next(r for r in recs if r.method == "test-missing")
    assert not rec.installed and rec.pip == 'pip install "quantkit-no-such-library==0"'
    assert rec.score == rules.GENERIC_SCORE and "not installed: pip install" in rec.describe()


def test_a_named_method_missing_from_the_build_is_excluded_as_unavailable(monkeypatch):
    monkeypatch.delitem(registry._methods, "awq")
    recs = recommend("inference", A100_80, params=8e9)
    assert "awq" not in methods_of(recs)
    assert recs.excluded["awq"].startswith("not available in this quantkit build")


def test_a_model_that_fits_nowhere_gets_an_empty_answer_with_the_closest_option():
    recs = recommend("inference", Hardware.cuda(capability=(8, 6), memory_gb=40), params=70e9)
    assert len(recs) == 0
    assert recs.closest is not None and not recs.closest.fits and recs.closest.bits == 4
    assert f"Closest: {recs.closest.method} 4-bit" in recs.note
    assert "hqq 2-bit" in recs.note  # fits under 4 bits, with the quality warning pointed to
    assert "does not fit" in recs.excluded["bnb-nf4"]
    assert "Nothing fits" in str(recs)


def test_memory_budget_overrides_the_hardware_memory():
    roomy = recommend("inference", H100, params=8e9)
    tight = recommend("inference", H100, params=8e9, memory_gb=6)
    assert len(tight) < len(roomy) and all(r.bits == 4 for r in tight)
    assert tight.budget_gb == 6


def test_bits_constraint():
    recs = recommend("inference", H100, params=8e9, bits=8)
    assert recs and all(r.bits == 8 for r in recs)
    assert "not 8" in recs.excluded["bnb-nf4"]


# -- properties --------------------------------------------------------------------------------------

CAPABILITIES = [(6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)]
memory = st.floats(min_value=2, max_value=256)
any_hardware = st.one_of(
    st.builds(Hardware.cuda, capability=st.sampled_from(CAPABILITIES), memory_gb=memory),
    st.builds(Hardware.cpu, ram_gb=memory),
    st.builds(Hardware.mps, memory_gb=memory),
    st.builds(Hardware.rocm, memory_gb=memory),
    st.builds(Hardware.xpu, memory_gb=memory),
)


@settings(max_examples=300, deadline=None)
@given(use_case=st.sampled_from(rules.USE_CASES), hw=any_hardware,
       params=st.floats(min_value=1e8, max_value=1e12), calibration_ok=st.booleans(),
       need_serialization=st.booleans(), need_torch_compile=st.booleans(),
       bits=st.one_of(st.none(), st.integers(min_value=1, max_value=8)))
def test_no_recommendation_is_unusable_on_the_given_hardware(use_case, hw, params, calibration_ok,
                                                             need_serialization, need_torch_compile, bits):
    if use_case == "extreme-compression" and bits is not None and bits >= 4:
        bits = None
    recs = recommend(use_case, hw, params=params, calibration_ok=calibration_ok,
                     need_serialization=need_serialization, need_torch_compile=need_torch_compile, bits=bits)
    backends = registry.all_methods()
    reserve = rules.reserve_gb(use_case, params)
    for r in recs:
        backend = backends[r.method]
        caps = backend.capabilities
        assert backend.unusable_reason(hw) is None, r.method
        if hw.kind == "cuda" and "fp8" in r.method:
            assert hw.capability >= (8, 9)
        assert r.estimated_gb + reserve <= hw.memory_gb + 1e-6 and r.fits
        assert r.bits in caps.bits and (bits is None or r.bits == bits)
        assert calibration_ok or not caps.needs_calibration
        assert not (need_serialization or use_case == "load-format") or caps.serializable
        assert not need_torch_compile or caps.torch_compile
        assert use_case != "fine-tuning" or caps.peft_trainable
        assert use_case != "extreme-compression" or r.bits < 4
        assert r.reasons and r.pip.startswith("pip install ")
        build_options(r.method, backend.options_type, r.options)  # qk.quantize accepts the options
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    listed = set(methods_of(recs))
    assert not listed & set(recs.excluded) and listed | set(recs.excluded) >= set(backends)
    assert all(recs.excluded.values())
    assert bool(recs) or recs.note


@settings(max_examples=100, deadline=None)
@given(small=st.floats(min_value=1e8, max_value=5e11), factor=st.floats(min_value=1.01, max_value=10),
       bits=st.sampled_from([2, 3, 4, 8]))
def test_estimates_grow_with_params_and_bits(small, factor, bits):
    big_hw = Hardware.cuda(capability=(9, 0), memory_gb=1e6)
    low = {r.method: r.estimated_gb for r in recommend("inference", big_hw, params=small, bits=bits)}
    high = {r.method: r.estimated_gb
            for r in recommend("inference", big_hw, params=small * factor, bits=bits)}
    assert low and low.keys() == high.keys()
    assert all(low[m] < high[m] for m in low)
    by_bits = [recommend("inference", big_hw, params=small, bits=b) for b in (1, 2, 3, 4, 8)]
    hqq = [next(r.estimated_gb for r in recs if r.method == "hqq") for recs in by_bits]
    assert hqq == sorted(hqq) and len(set(hqq)) == len(hqq)


def test_recommend_imports_no_backend_library():
    libs = repr(BACKEND_LIBRARIES)
    code = (
        "import sys\n"
        "import quantkit\n"
        "from quantkit.hardware import Hardware\n"
        "from quantkit.selector import recommend\n"
        "before = set(sys.modules)\n"
        "for use in ('inference', 'fine-tuning', 'load-format', 'extreme-compression'):\n"
        "    recommend(use, 'auto', params=7e9)\n"
        "    recommend(use, Hardware.cuda(capability=(9, 0), memory_gb=80), params=70e9)\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        f"bad = [m for m in {libs} if m in sys.modules] + sorted(new & {{'transformers'}})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# -- model size ----------------------------------------------------------------------------------

TINY_CONFIGS = {
    "llama": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=172, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=False),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128),
    "qwen2": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True),
    "mixtral": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=1000, num_local_experts=4),
    "deepseek_v3": dict(hidden_size=64, num_hidden_layers=3, intermediate_size=128,
                        moe_intermediate_size=32, n_routed_experts=8, n_shared_experts=1,
                        first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
                        q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16,
                        v_head_dim=16, vocab_size=1000, n_group=1, topk_group=1, num_experts_per_tok=2),
}


def test_parameter_count_matches_transformers_for_each_architecture():
    from torch import nn
    from transformers import AutoConfig
    from transformers.pytorch_utils import Conv1D

    from quantkit.models import empty_model

    for kind, kwargs in TINY_CONFIGS.items():
        config = AutoConfig.for_model(kind, **kwargs)
        model = empty_model(config)
        model.tie_weights()
        head = model.get_output_embeddings()
        total = sum(p.numel() for p in model.parameters())
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D))
                     and m is not head)
        linear += sum(p.numel() for p in model.parameters() if p.ndim == 3)  # fused MoE experts
        size = size_from_config(config.to_dict())
        assert size.total == pytest.approx(total, rel=0.01), kind
        assert size.linear == pytest.approx(linear, rel=0.01), kind


def test_known_sizes_from_published_shapes():
    llama2_7b = dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, intermediate_size=11008,
                     num_attention_heads=32, vocab_size=32000, tie_word_embeddings=False)
    assert size_from_config(llama2_7b).total == pytest.approx(6.74e9, rel=0.002)
    multimodal = {"model_type": "llava", "text_config": llama2_7b}
    assert size_from_config(multimodal).total == size_from_config(llama2_7b).total


def test_model_size_from_a_folder_and_params_override(llama_dir):
    from quantkit.testing import tiny_llama

    size = model_size(llama_dir)
    assert size.total == pytest.approx(sum(p.numel() for p in tiny_llama().parameters()), rel=0.01)
    assert model_size(llama_dir, params=1e9).total == 1e9
    assumed = model_size(params=7e9)
    assert assumed.assumed and assumed.total == 7e9 and 0 < assumed.kept_float < 0.1 * 7e9
    recs = recommend("inference", CPU, model=llama_dir)
    assert recs and recs.size.total == size.total


def test_model_size_from_the_local_hub_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    snapshot = tmp_path / "models--org--cached-model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(dict(model_type="llama", hidden_size=64,
                                                          num_hidden_layers=2, vocab_size=100)))
    (tmp_path / "models--org--cached-model" / "refs").mkdir()
    (tmp_path / "models--org--cached-model" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    assert model_size("org/cached-model").total > 0
    with pytest.raises(NotAModelError, match="params=7e9"):
        model_size("org/not-downloaded-model")


def test_bad_sizes_are_refused():
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(QuantkitError):
            model_size(params=bad)
    with pytest.raises(QuantkitError, match="params="):
        recommend("inference", CPU)


# -- input errors, output, docs, CLI -----------------------------------------------------------------


def test_input_errors_say_what_to_do():
    with pytest.raises(QuantkitError, match="fine-tuning"):
        recommend("training-from-scratch", CPU, params=1e9)
    assert recommend("qlora", A100_40, params=7e9).use_case == "fine-tuning"
    with pytest.raises(QuantkitError, match="Hardware"):
        recommend("inference", "tpu", params=1e9)
    with pytest.raises(QuantkitError, match="1 to 8"):
        recommend("inference", CPU, params=1e9, bits=16)
    with pytest.raises(QuantkitError, match="under 4 bits"):
        recommend("extreme-compression", CPU, params=1e9, bits=4)


def test_auto_uses_the_detected_hardware():
    from quantkit.hardware import hardware

    recs = recommend(params=1e9)
    assert recs.hardware == hardware() and recs.budget_gb == hardware().memory_gb


def test_text_html_and_json_output():
    recs = recommend("inference", H100, params=8e9)
    text = str(recs)
    assert text == repr(recs)
    assert "rank" in text and recs[0].method in text and "Excluded" in text and "- use case:" in text
    html = recs._repr_html_()
    assert html.count("<table>") == 2 and "reasons" in html
    data = json.loads(json.dumps(recs.to_dict()))
    assert data["recommendations"][0]["method"] == recs[0].method and data["excluded"] == recs.excluded
    assert recs[0].code.startswith(f'qk.quantize(model, "{recs[0].method}"')


def test_docs_page_is_generated_from_the_rules():
    page = (ROOT / "docs" / "choosing.md").read_text(encoding="utf-8")
    assert page == rules.render_guide_markdown(), (
        "docs/choosing.md is out of date: run `quantkit recommend --write-docs` "
        "(or `python -m quantkit.selection_rules --write-docs`)")


def test_every_rule_cites_facts_that_exist():
    cited = [k for fits in rules.RANKINGS.values() for f in fits for k in f.facts]
    cited += [k for r in rules.HARDWARE_RULES for k in r.facts]
    cited += [k for t in rules.TIERS.values() for k in t.facts] + list(rules.TIGHT_FACTS)
    cited += [k for u in rules.USE_CASE_SPECS.values() for k in u.facts]
    assert set(cited) <= set(rules.FACTS)
    assert set(rules.USE_CASES) == set(rules.RANKINGS) == set(rules.RESERVE) == set(rules.USE_CASE_SPECS)


@pytest.mark.skipif(not FACTS_PATH.is_file(),
                    reason=f"{FACTS_PATH} lives outside the repository (the shared reference folder) "
                           "and is not present on this machine")
def test_fact_quotes_are_on_the_cited_lines():
    lines = FACTS_PATH.read_text(encoding="utf-8").splitlines()
    for key, fact in rules.FACTS.items():
        assert fact.quote in lines[fact.line - 1], (key, fact.line, lines[fact.line - 1])


def run_cli(argv: list[str], capsys) -> str:
    parser = argparse.ArgumentParser(prog="quantkit")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.run(args)
    return capsys.readouterr().out


def test_cli_recommend(capsys, tmp_path):
    out = run_cli(["recommend", "--use-case", "fine-tuning", "--params", "7e9", "--hardware", "cuda",
                   "--capability", "8.0", "--memory-gb", "40"], capsys)
    assert "bnb-nf4" in out.splitlines()[3] and "capability 8.0" in out
    data = json.loads(run_cli(["recommend", "--params", "1e9", "--hardware", "cpu", "--memory-gb", "16",
                               "--no-calibration", "--json"], capsys))
    assert data["budget_gb"] == 16 and "gptq" in data["excluded"]
    target = tmp_path / "choosing.md"
    run_cli(["recommend", "--write-docs", str(target)], capsys)
    assert target.read_text(encoding="utf-8") == rules.render_guide_markdown()
    with pytest.raises(QuantkitError, match="MAJOR.MINOR"):
        run_cli(["recommend", "--params", "7e9", "--hardware", "cuda", "--capability", "hopper"], capsys)
