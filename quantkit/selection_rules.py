"""The selector's knowledge, as tables: use-case rankings, hardware rules, memory and cost figures.

Every rule names the facts it rests on (keys of ``FACTS``); each fact is a line of
``selection-facts.md`` (the project's summary of the upstream guide, kept in the shared reference
folder), cited in the comments as ``facts L<n>``. Figures that are quantkit's own assumptions say so.
``render_guide_markdown()`` turns these tables into docs/choosing.md, so the page cannot drift from
the code; regenerate it with ``python -m quantkit.selection_rules --write-docs``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FACTS_FILE = "selection-facts.md"
GUIDE_PATH = Path(__file__).resolve().parent.parent / "docs" / "choosing.md"


@dataclass(frozen=True)
class Fact:
    """One line of selection-facts.md: ``quote`` is text found on that line, ``says`` our summary."""

    line: int
    quote: str
    says: str


FACTS: dict[str, Fact] = {
    "bnb-easiest": Fact(12, "inference, easiest, no calibration",
                        "inference with no calibration, the easiest way: bitsandbytes (nf4 / int8), "
                        "quantized while loading; any model with nn.Linear"),
    "hqq-fast": Fact(13, "inference, no calibration, fast quantization, many bit widths",
                     "HQQ: no calibration data, fast quantization, 1/2/3/4/8 bits, torch.compile friendly; "
                     "accuracy drops fast under 4 bits"),
    "torchao-flex": Fact(14, "flexibility and speed with torch.compile, CPU too",
                         "torchao: int8 / int4 / fp8, torch.compile, decent CPU support; int4 weight-only "
                         "may trail GPTQ/AWQ in accuracy"),
    "best-4bit": Fact(15, "inference, best 4-bit accuracy, calibration is acceptable",
                      "GPTQ or AWQ for the best 4-bit accuracy: calibration data and a separate step, can "
                      "overfit the calibration set, many ready checkpoints on the Hub, faster generation "
                      "than bnb 4-bit"),
    "ct-format": Fact(16, "loading a given format (FP8, W8A8, sparse 2:4)",
                      "loading a given format (FP8, W8A8, sparse 2:4): compressed-tensors, produced by "
                      "llm-compressor, served by vLLM"),
    "qlora": Fact(17, "fine-tuning adapters (QLoRA)",
                  "fine-tuning adapters (QLoRA): bitsandbytes nf4, the established path; others that are "
                  "PEFT-trainable"),
    "extreme": Fact(18, "extreme compression, under 4 bits",
                    "under 4 bits: HQQ 2/3-bit, GPTQ 2/3-bit; large quality loss, heavy compute, "
                    "benchmark before production"),
    "workflow": Fact(20, "Recommended workflow from the blog post",
                     "workflow: quantize the base with bitsandbytes, train adapters, merge, then quantize "
                     "the merged model with GPTQ for deployment"),
    "calibration-time": Fact(26, "Calibration time for an 8B model on one A100",
                             "calibrating an 8B model on one A100: GPTQ about 20 min, AWQ about 10 min"),
    "calibration-175b": Fact(27, "GPTQ on a 175B model: about 4 GPU hours",
                             "GPTQ on a 175B model: about 4 GPU hours"),
    "calibration-a10": Fact(28, "35 minutes and about 16 GB of GPU memory at peak",
                            "GPTQ of a 7B model on one A10 (24 GB): about 35 min, about 16 GB at peak; "
                            "2-, 3- and 4-bit cost the same"),
    "peak-13b": Fact(29, "Llama-2-13B, A100-80GB, prompt 512, batch 1",
                     "Llama-2-13B on an A100, prompt 512, batch 1: fp16 peaks at 29,153 MB (its weights "
                     "are ~26 GB); GPTQ 10,484 MB; bnb 4-bit 11,018 MB"),
    "latency-13b": Fact(30, "GPTQ 4-bit g128 (exllama) 33.71 ms/token",
                        "Llama-2-13B prefill: GPTQ 33.71 ms/token, bnb 4-bit 52.00 ms/token, fp16 36.96"),
    "batch-16": Fact(31, "Batch 16: fp16 69.94 ms, 53,987 MB",
                     "batch 16 needs far more memory: fp16 53,987 MB, GPTQ 34,777 MB, bnb 35,532 MB"),
    "generation": Fact(33, "GPTQ faster than bnb",
                       "generation: GPTQ faster than bnb 4-bit on A100, T4 and Titan RTX, about twice as "
                       "fast at batch 4"),
    "training-speed": Fact(35, "bnb faster than GPTQ",
                           "adapter fine-tuning: bnb faster than GPTQ (exllama kernels must be off)"),
    "leaderboard-7b": Fact(36, "Llama-2-7B: fp16 54.32, bnb 4-bit 53.4, GPTQ 53.23",
                           "Open LLM Leaderboard, Llama-2-7B: fp16 54.32, bnb 4-bit 53.4, GPTQ 53.23"),
    "leaderboard-13b": Fact(37, "Llama-2-13B: fp16 58.66, GPTQ (act-order, g128) 58.03",
                            "Open LLM Leaderboard, Llama-2-13B: fp16 58.66, GPTQ 58.03, bnb 4-bit 56.9"),
    "larger-lose-less": Fact(38, "Larger models lose less", "larger models lose less"),
    "caps-table": Fact(42, "| method | on the fly | CPU | CUDA | ROCm | Metal |",
                       "capabilities per library: on the fly, devices, torch.compile, bits, PEFT, "
                       "serializable (each backend declares its own in quantkit)"),
    "hqq-peft": Fact(47, "| HQQ | yes | yes | yes | no | no | yes | yes | 1 – 8 | yes |",
                     "HQQ: on the fly, 1-8 bits, PEFT-trainable, not serializable in transformers"),
    "ct-caps": Fact(49, "| compressed-tensors | no | yes | yes | yes | no | no | no | 1 – 8 | yes | yes |",
                    "compressed-tensors: not on the fly, CPU / CUDA / ROCm, no torch.compile, "
                    "PEFT-trainable, serializable"),
    "fp8-floor": Fact(51, "FP8 compute needs CUDA capability 8.9 or newer",
                      "FP8 compute needs CUDA capability 8.9 or newer (Ada, Hopper)"),
    "marlin": Fact(51, "Marlin-style int4", "Marlin-style int4 kernels need CUDA capability 8.0 or newer"),
    "scheme-guide": Fact(52, "scheme guide maps Blackwell to NVFP4",
                         "llm-compressor's scheme guide: Blackwell -> NVFP4, Hopper -> FP8, Ampere -> W4A16"),
    "hqq-own-format": Fact(63, "transformers 5.24 refuses to quantize with HqqConfig",
                           "transformers 5.24 cannot quantize or load HQQ correctly, so quantkit saves HQQ "
                           "in its own format, which stock transformers does not load"),
    "torchao-cpu": Fact(66, "int8 weight-only, int8 dynamic and fp8 weight-only run on CPU",
                        "torchao on CPU: int8 weight-only, int8 dynamic and fp8 weight-only run"),
    "torchao-int4-cpu": Fact(67, "the CPU int4 layout lives in the prototype namespace",
                             "torchao int4 on CPU uses a layout from the prototype namespace"),
    "ct-presets": Fact(71, "presets W4A16, W8A8, FP8, NVFP4, MXFP4",
                       "compressed-tensors presets W4A16, W8A8, FP8, NVFP4, MXFP4 save and reload"),
    "weight-error": Fact(75, "Weight error of 4-bit methods on a small random Llama",
                         "relative weight error on a small Llama: 4-bit about 9-12 %, int8 under 1 %"),
}

# -- use cases ------------------------------------------------------------------------------------

USE_CASES = ("inference", "fine-tuning", "load-format", "extreme-compression")
USE_CASE_ALIASES = {"finetuning": "fine-tuning", "fine-tune": "fine-tuning", "qlora": "fine-tuning",
                    "training": "fine-tuning", "format": "load-format", "extreme": "extreme-compression",
                    "serving": "inference"}


@dataclass(frozen=True)
class UseCase:
    """What a use case asks of a method, and which bit widths it tries, in order."""

    name: str
    summary: str
    bits_order: tuple[int, ...]
    needs_peft: bool = False
    needs_serialization: bool = False
    needs_sub4: bool = False
    facts: tuple[str, ...] = ()


USE_CASE_SPECS: dict[str, UseCase] = {
    # facts L12-L15: the guide's inference rows are about 4-bit (and bitsandbytes' int8).
    "inference": UseCase("inference", "run a quantized model for generation", (4, 8),
                         facts=("bnb-easiest", "hqq-fast", "torchao-flex", "best-4bit")),
    # facts L17: adapters are trained on a quantized base, so the method must be PEFT-trainable.
    "fine-tuning": UseCase("fine-tuning", "train adapters (QLoRA) on a quantized base model", (4, 8),
                           needs_peft=True, facts=("qlora", "workflow")),
    # facts L16: a checkpoint format, so it must save and reload.
    "load-format": UseCase("load-format", "produce or load a checkpoint in a given on-disk format "
                           "(FP8, W8A8, W4A16 ...) to serve elsewhere", (4, 8),
                           needs_serialization=True, facts=("ct-format",)),
    # facts L18: under 4 bits only; the highest sub-4-bit width that fits is tried first.
    "extreme-compression": UseCase("extreme-compression", "fit a model in the least memory, "
                                   "under 4 bits (research)", (3, 2, 1), needs_sub4=True,
                                   facts=("extreme",)),
}


@dataclass(frozen=True)
class Fit:
    """How well ``method`` fits a use case (higher is better) and why, with the facts it rests on."""

    method: str
    score: int
    why: str
    facts: tuple[str, ...]


# Methods named here that a build does not register are reported as "not available in this
# quantkit build"; registered methods named nowhere get GENERIC_SCORE.
RANKINGS: dict[str, tuple[Fit, ...]] = {
    "inference": (
        # facts L15, L30, L33: best 4-bit accuracy with calibration; faster generation than bnb 4-bit.
        Fit("gptq", 90, "the guide's choice for the best 4-bit accuracy when calibration is acceptable; "
            "generates faster than bnb 4-bit (Llama-2-13B: 33.7 vs 52.0 ms/token)",
            ("best-4bit", "latency-13b", "generation")),
        # facts L15, L26: the same tier as GPTQ, calibrates in about half the time.
        Fit("awq", 89, "the guide's other choice for the best 4-bit accuracy with calibration; "
            "calibrates in about half GPTQ's time", ("best-4bit", "calibration-time")),
        # facts L12: first choice without calibration.
        Fit("bnb-nf4", 80, "the easiest: no calibration, quantized while loading, works on any model "
            "with nn.Linear layers", ("bnb-easiest",)),
        # facts L13.
        Fit("hqq", 77, "no calibration data and fast to quantize; torch.compile friendly",
            ("hqq-fast",)),
        # facts L14.
        Fit("torchao-int4", 74, "torchao int4: torch.compile friendly, runs on CPU too; may trail "
            "GPTQ/AWQ in accuracy", ("torchao-flex",)),
        # facts L12, L75: bitsandbytes int8 is the guide's other zero-shot choice; int8 is near float.
        Fit("bnb-int8", 72, "bitsandbytes int8: zero-shot and close to the float model, at twice the "
            "memory of 4-bit", ("bnb-easiest", "weight-error")),
        # facts L14, L75.
        Fit("torchao-int8", 71, "torchao int8 weight-only: close to the float model, torch.compile "
            "friendly, runs on CPU", ("torchao-flex", "weight-error")),
        Fit("torchao-int8-dynamic", 70, "torchao int8 weights and activations: int8 matmuls, "
            "torch.compile friendly", ("torchao-flex", "weight-error")),
        # facts L14, L51.
        Fit("torchao-fp8", 68, "torchao float8 weights: near float; fast FP8 compute on CUDA 8.9+",
            ("torchao-flex", "fp8-floor")),
        # facts L16, L52: compressed-tensors is the format vLLM serves; one scheme per GPU generation.
        Fit("ct-w4a16", 66, "compressed-tensors W4A16 checkpoint, served by vLLM",
            ("ct-format", "scheme-guide")),
        Fit("ct-fp8", 65, "compressed-tensors FP8 checkpoint, served by vLLM",
            ("ct-format", "scheme-guide")),
        Fit("ct-w8a8", 64, "compressed-tensors W8A8 checkpoint, served by vLLM", ("ct-format",)),
        Fit("ct-w8a16", 63, "compressed-tensors W8A16 checkpoint, served by vLLM",
            ("ct-format", "ct-presets")),
        Fit("ct-nvfp4", 62, "compressed-tensors NVFP4 checkpoint, served by vLLM",
            ("ct-format", "scheme-guide")),
        Fit("ct-mxfp4", 61, "compressed-tensors MXFP4 checkpoint", ("ct-format", "ct-presets")),
        # facts L12 names nf4 (and int8) for bitsandbytes, not fp4.
        Fit("bnb-fp4", 60, "bitsandbytes 4-bit float: zero-shot, but nf4 is the guide's 4-bit choice",
            ("bnb-easiest",)),
    ),
    "fine-tuning": (
        # facts L17, L20.
        Fit("bnb-nf4", 100, "the established QLoRA path; afterwards merge the adapters and quantize the "
            "merged model with GPTQ for deployment", ("qlora", "workflow")),
        # facts L17, L35: bitsandbytes trains faster than GPTQ.
        Fit("bnb-fp4", 76, "bitsandbytes 4-bit float: the QLoRA path with a float grid (nf4 is usual)",
            ("qlora", "training-speed")),
        Fit("bnb-int8", 74, "bitsandbytes int8: PEFT-trainable, closer to float, twice the memory",
            ("qlora", "training-speed", "weight-error")),
        # facts L17, L47.
        Fit("hqq", 70, "PEFT-trainable, no calibration", ("qlora", "hqq-peft")),
        # facts L17, L35.
        Fit("gptq", 60, "PEFT-trainable, but adapter training is slower than on bitsandbytes "
            "(exllama kernels must be off)", ("qlora", "training-speed")),
        Fit("awq", 58, "PEFT-trainable; calibration needed first", ("qlora",)),
        # facts L17, L49.
        Fit("ct-w4a16", 50, "compressed-tensors weight-only: PEFT-trainable", ("qlora", "ct-caps")),
        # ct-w8a8 and ct-fp8 quantize activations without gradients: not PEFT-trainable.
        Fit("ct-w8a16", 47, "compressed-tensors weight-only: PEFT-trainable", ("qlora", "ct-caps")),
        Fit("ct-nvfp4", 46, "compressed-tensors weight-only: PEFT-trainable", ("qlora", "ct-caps")),
        Fit("ct-mxfp4", 45, "compressed-tensors weight-only: PEFT-trainable", ("qlora", "ct-caps")),
    ),
    "load-format": (
        # facts L16.
        Fit("ct-fp8", 90, "compressed-tensors FP8: the format llm-compressor writes and vLLM serves",
            ("ct-format", "scheme-guide")),
        Fit("ct-w8a8", 89, "compressed-tensors W8A8: the format llm-compressor writes and vLLM serves",
            ("ct-format",)),
        Fit("ct-w4a16", 88, "compressed-tensors W4A16: the format llm-compressor writes and vLLM serves",
            ("ct-format", "scheme-guide")),
        Fit("ct-w8a16", 87, "compressed-tensors W8A16: the format llm-compressor writes and vLLM serves",
            ("ct-format", "ct-presets")),
        Fit("ct-nvfp4", 86, "compressed-tensors NVFP4: the format llm-compressor writes and vLLM serves",
            ("ct-format", "scheme-guide")),
        Fit("ct-mxfp4", 85, "compressed-tensors MXFP4: a compressed-tensors preset",
            ("ct-format", "ct-presets")),
        # facts L15: many ready checkpoints on the Hub.
        Fit("gptq", 75, "GPTQ: many ready checkpoints on the Hub", ("best-4bit",)),
        Fit("awq", 74, "AWQ: many ready checkpoints on the Hub", ("best-4bit",)),
        # facts L44, L48: bitsandbytes serializes; torchao partly.
        Fit("bnb-nf4", 60, "bitsandbytes format: stock transformers loads it", ("caps-table",)),
        Fit("bnb-int8", 59, "bitsandbytes format: stock transformers loads it", ("caps-table",)),
        Fit("bnb-fp4", 55, "bitsandbytes format: stock transformers loads it", ("caps-table",)),
        Fit("torchao-int8", 55, "torchao format: stock transformers loads Llama-style models",
            ("caps-table",)),
        Fit("torchao-int8-dynamic", 54, "torchao format: stock transformers loads Llama-style models",
            ("caps-table",)),
        Fit("torchao-fp8", 53, "torchao format: stock transformers loads Llama-style models",
            ("caps-table", "fp8-floor")),
        Fit("torchao-int4", 50, "torchao int4: quantkit's loader only", ("caps-table",)),
        # facts L63: quantkit's own HQQ format.
        Fit("hqq", 30, "quantkit's own HQQ format; stock transformers does not load it",
            ("hqq-own-format",)),
    ),
    "extreme-compression": (
        # facts L18, L13.
        Fit("hqq", 90, "HQQ 3/2/1-bit with no calibration, fast to quantize", ("extreme", "hqq-fast")),
        # facts L18, L28: 2- and 3-bit cost the same calibration time as 4-bit.
        Fit("gptq", 85, "GPTQ 3/2-bit: calibrated, same calibration cost as 4-bit",
            ("extreme", "calibration-a10")),
    ),
}
GENERIC_SCORE = 30
GENERIC_WHY = "no rule in the guide names this method; ranked after the guide's choices"


@dataclass(frozen=True)
class HardwareRule:
    """A score change for ``methods`` on hardware of ``kind`` with capability in [low, high)."""

    use_cases: tuple[str, ...]
    kind: str
    methods: tuple[str, ...]
    change: int
    why: str
    facts: tuple[str, ...]
    low: tuple[int, int] | None = None
    high: tuple[int, int] | None = None

    def applies(self, use_case: str, kind: str, capability: tuple[int, int] | None, method: str) -> bool:
        if use_case not in self.use_cases or kind != self.kind or method not in self.methods:
            return False
        if self.low is None and self.high is None:
            return True
        if capability is None:
            return False
        return (self.low is None or capability >= self.low) and (self.high is None or capability < self.high)

    @property
    def where(self) -> str:
        if self.low and self.high:
            return f"{self.kind} {self.low[0]}.{self.low[1]} to below {self.high[0]}.{self.high[1]}"
        if self.low:
            return f"{self.kind} {self.low[0]}.{self.low[1]} or newer"
        if self.high:
            return f"{self.kind} below {self.high[0]}.{self.high[1]}"
        return self.kind


SERVE = ("inference", "load-format")
HARDWARE_RULES: tuple[HardwareRule, ...] = (
    # facts L14, L66: torchao is the guide's choice for CPU; int8 and int8-dynamic run there.
    HardwareRule(("inference",), "cpu", ("torchao-int8",), 25,
                 "torchao int8 runs on CPU with torchao's stable configs", ("torchao-flex", "torchao-cpu")),
    HardwareRule(("inference",), "cpu", ("torchao-int8-dynamic",), 23,
                 "torchao int8 dynamic runs on CPU (int8 matmuls)", ("torchao-flex", "torchao-cpu")),
    # facts L67: CPU int4 exists, from the prototype namespace.
    HardwareRule(("inference",), "cpu", ("torchao-int4",), 10,
                 "torchao int4 runs on CPU, with a layout from torchao's prototype namespace",
                 ("torchao-flex", "torchao-int4-cpu")),
    # facts L51: FP8 compute from capability 8.9 (Ada, Hopper, and newer).
    HardwareRule(SERVE, "cuda", ("torchao-fp8", "ct-fp8"), 15, "this GPU computes in FP8",
                 ("fp8-floor",), low=(8, 9)),
    # facts L52-L53: llm-compressor's scheme guide, for producing checkpoints: Hopper (and Ada) -> FP8,
    # Blackwell -> NVFP4, Ampere -> W4A16 (where Marlin-style int4 kernels run, facts L51). No penalty
    # below 8.0 for GPTQ: it still generated faster than bnb on a T4 (facts L33).
    HardwareRule(("load-format",), "cuda", ("ct-fp8",), 20,
                 "FP8 is the scheme guide's choice for Ada / Hopper", ("scheme-guide",),
                 low=(8, 9), high=(10, 0)),
    HardwareRule(("load-format",), "cuda", ("ct-nvfp4",), 25,
                 "NVFP4 is the scheme guide's choice for Blackwell", ("scheme-guide",), low=(10, 0)),
    HardwareRule(("load-format",), "cuda", ("ct-w4a16",), 15,
                 "W4A16 is the scheme guide's choice for Ampere, with Marlin-style int4 kernels",
                 ("scheme-guide", "marlin"), low=(8, 0), high=(8, 9)),
)


@dataclass(frozen=True)
class CapabilityFloor:
    """Methods whose name contains ``marker`` need CUDA capability ``floor`` (whatever they declare)."""

    marker: str
    floor: tuple[int, int]
    why: str
    facts: tuple[str, ...]


# facts L51: FP8 compute needs 8.9 (enforced on CUDA even if a backend forgets to declare it).
CAPABILITY_FLOORS = (CapabilityFloor("fp8", (8, 9), "FP8 compute needs CUDA capability >= 8.9 (Ada, Hopper)",
                                     ("fp8-floor",)),)

# -- memory ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheme:
    """How a method stores its scales: one group of ``group_size`` weights shares ``scale_bits``
    bits of scale (and zero point); ``group_size=None`` means one scale per row (negligible).
    A backend's own ``group_size`` option default, when it has one, replaces ``group_size``."""

    group_size: int | None
    scale_bits: float
    layout: str


# These are the formats' documented layouts (not figures from selection-facts.md).
SCHEMES: dict[str, Scheme] = {
    "bnb-nf4": Scheme(64, 8 + 32 / 256, "blocks of 64, 8-bit absmax (double quantization) "
                      "+ fp32 per 256 blocks"),
    "bnb-fp4": Scheme(64, 8 + 32 / 256, "as bnb-nf4"),
    "bnb-int8": Scheme(None, 32, "one fp32 scale per row"),
    "hqq": Scheme(64, 32, "fp16 scale + fp16 zero per group"),
    "torchao-int4": Scheme(128, 32, "bf16 scale + bf16 zero per group"),
    "torchao-int8": Scheme(None, 16, "one scale per row"),
    "torchao-int8-dynamic": Scheme(None, 16, "one scale per row"),
    "torchao-fp8": Scheme(None, 32, "one fp32 scale per row"),
    "gptq": Scheme(128, 16 + 4, "fp16 scale + packed zero per group"),
    "awq": Scheme(128, 16 + 4, "fp16 scale + packed zero per group"),
    "ct-w4a16": Scheme(128, 16, "bf16 scale per group (symmetric)"),
    "ct-w8a8": Scheme(None, 16, "one scale per row"),
    "ct-fp8": Scheme(None, 16, "one scale per row"),
    "ct-w8a16": Scheme(128, 16, "bf16 scale per group (symmetric)"),
    "ct-nvfp4": Scheme(16, 8, "fp8 scale per 16 weights (+ one global scale)"),
    "ct-mxfp4": Scheme(32, 8, "8-bit power-of-two scale per 32 weights"),
}
GENERIC_SCHEME = Scheme(128, 32, "assumed: 16-bit scale + zero per 128 weights")
FLOAT_BITS = 16       # embeddings, lm_head and norms stay in 16-bit float
GIB = 2**30

# Runtime reserve on top of the weights, in GB: base + per_b x billions of parameters.
# Inference, fit to facts L29: at batch 1, prompt 512, Llama-2-13B peaked about 3 GB above its
# weights (fp16: 29.2 GB vs ~26 GB); larger batches need far more (facts L31). Fine-tuning is
# quantkit's assumption (adapters, optimizer state, activations; no figure in the facts).
RESERVE = {"inference": (1.0, 0.15), "load-format": (1.0, 0.15), "extreme-compression": (1.0, 0.15),
           "fine-tuning": (1.0, 0.25)}


# A fit with less than TIGHT_SPARE of the budget left beyond the reserve ranks lower: a longer
# prompt or a larger batch would not fit (facts L31: batch 16 needs far more memory than batch 1).
TIGHT_SPARE = 0.10
TIGHT_CHANGE = -15
TIGHT_FACTS = ("batch-16",)


def reserve_gb(use_case: str, params: float) -> float:
    base, per_b = RESERVE[use_case]
    return base + per_b * params / 1e9


def overhead_bits(method: str, group_size: int | None = None) -> float:
    """Bits of scale storage per weight for ``method`` (``group_size`` overrides the scheme's)."""
    scheme = SCHEMES.get(method, GENERIC_SCHEME)
    group = group_size or scheme.group_size
    return scheme.scale_bits / group if group else 0.0


def weights_gb(linear: float, kept_float: float, bits: int, overhead: float) -> float:
    """Memory of the quantized weights: linear x (bits + scale bits) / 8 + float layers x 2 bytes."""
    return (linear * (bits + overhead) + kept_float * FLOAT_BITS) / 8 / GIB


# -- calibration cost -----------------------------------------------------------------------------

# facts L26-L27: GPTQ ~20 min for 8B and ~4 GPU hours for 175B (A100); AWQ ~10 min for 8B.
# Time = minutes_8b x (params / 8B) ** CALIBRATION_EXPONENT, the power law through both GPTQ points.
CALIBRATION_MINUTES_8B = {"gptq": 20.0, "awq": 10.0}
CALIBRATION_EXPONENT = 0.805   # log(240 / 20) / log(175 / 8)


def calibration_minutes(family: str, params: float) -> float:
    """Documented-figure estimate of calibration time on one A100 (GPTQ's figure for unknown methods)."""
    base = CALIBRATION_MINUTES_8B.get(family, CALIBRATION_MINUTES_8B["gptq"])
    return base * (params / 8e9) ** CALIBRATION_EXPONENT


def family(method: str) -> str:
    """The library family of a method name: bitsandbytes, hqq, torchao, gptq, awq, compressed-tensors."""
    for prefix, name in (("bnb-", "bitsandbytes"), ("torchao-", "torchao"), ("ct-", "compressed-tensors"),
                         ("hqq", "hqq"), ("gptq", "gptq"), ("awq", "awq")):
        if method.startswith(prefix):
            return name
    return method


# -- accuracy tiers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    label: str
    says: str
    facts: tuple[str, ...]


TIERS = {
    # facts L75: int8 under 1 % weight error.
    "8-bit": Tier("near float", "8-bit weights: near the float model (int8 weight error under 1 %)",
                  ("weight-error",)),
    # facts L37: GPTQ 58.03 vs bnb 56.9 vs fp16 58.66 on Llama-2-13B.
    "4-bit calibrated": Tier("4-bit calibrated", "calibrated 4-bit: the best 4-bit accuracy (Llama-2-13B "
                             "leaderboard: GPTQ 58.03, bnb 4-bit 56.9, fp16 58.66)",
                             ("best-4bit", "leaderboard-13b")),
    # facts L36, L75.
    "4-bit": Tier("4-bit", "zero-shot 4-bit: about 9-12 % weight error; small loss on benchmarks "
                  "(Llama-2-7B leaderboard: bnb 4-bit 53.4, fp16 54.32)", ("weight-error", "leaderboard-7b")),
    # facts L13, L18.
    "sub-4-bit": Tier("under 4 bits", "under 4 bits: large quality loss, accuracy drops fast; benchmark "
                      "before production", ("extreme", "hqq-fast")),
}


def tier(bits: int, calibrated: bool) -> Tier:
    if bits >= 8:
        return TIERS["8-bit"]
    if bits < 4:
        return TIERS["sub-4-bit"]
    return TIERS["4-bit calibrated" if calibrated else "4-bit"]


# -- lookups --------------------------------------------------------------------------------------


def use_case(name: str) -> UseCase:
    """The UseCase for a name or alias (``fine_tuning``, ``qlora`` ...), or a QuantkitError."""
    from quantkit.errors import QuantkitError

    key = str(name).strip().lower().replace("_", "-")
    key = USE_CASE_ALIASES.get(key, key)
    if key not in USE_CASE_SPECS:
        raise QuantkitError(f"use_case={name!r} is not one quantkit knows; choose one of "
                            f"{', '.join(USE_CASES)}.")
    return USE_CASE_SPECS[key]


def fit(use: str, method: str) -> Fit | None:
    return next((f for f in RANKINGS[use] if f.method == method), None)


def named_methods(use: str | None = None) -> list[str]:
    """Methods the rules name (for one use case, or for all), in ranking order."""
    cases = [use] if use else list(USE_CASES)
    return list(dict.fromkeys(f.method for case in cases for f in RANKINGS[case]))


def cite(keys: Sequence[str]) -> str:
    """``facts L15, L33`` for fact keys."""
    lines = sorted({FACTS[k].line for k in keys})
    return "facts " + ", ".join(f"L{n}" for n in lines) if lines else ""


# -- the generated guide --------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def render_guide_markdown() -> str:
    """docs/choosing.md, generated from the tables above (so docs and code cannot drift)."""
    md = [
        "# Choosing a quantization method",
        "",
        "<!-- Generated from quantkit/selection_rules.py by `quantkit recommend --write-docs` (or "
        "`python -m quantkit.selection_rules --write-docs`); do not edit by hand: a test checks that "
        "this page equals the rules. -->",
        "",
        "`qk.recommend(...)` (and `quantkit recommend`) applies the rules on this page to your use case,",
        "your hardware (detected, or declared with `qk.Hardware.cuda(capability=(9, 0), memory_gb=80)`)",
        "and your model's size (read from its `config.json`, no weights), and returns ranked methods,",
        "each with its reasons, plus every excluded method with why. It reads only the capabilities",
        "each backend declares, so it answers instantly and imports no quantization library.",
        "",
        "```python",
        "import quantkit as qk",
        "recs = qk.recommend(use_case=\"inference\", model=\"path/or/hub-id\", memory_gb=24)",
        "recs[0].method, recs[0].options, recs[0].bits, recs[0].estimated_gb, recs[0].reasons",
        "recs.excluded   # {method: why}",
        "```",
        "",
        "```bash",
        "quantkit recommend --use-case fine-tuning --params 7e9 \\",
        "                   --hardware cuda --capability 8.0 --memory-gb 40",
        "```",
        "",
        "Rules cite lines of `selection-facts.md` (the project's summary of the Transformers guide",
        "\"Selecting a quantization method\", its overview table, and the Hugging Face bitsandbytes-vs-GPTQ",
        "post) as *facts L<n>*; the [sources](#sources) table at the end says what each line holds.",
        "",
        "## How a method is chosen",
        "",
        "1. A method named by a rule but not registered in this quantkit build is listed as excluded",
        "   (\"not available in this quantkit build\"). Registered methods no rule names get score "
        f"{GENERIC_SCORE}.",
        "2. A method is excluded, with every reason that applies, when: the use case needs what it lacks",
        "   (see each use case); it has no kernels for the hardware's kind or needs a newer CUDA",
        "   capability than the GPU has (declared by the backend, plus the floors below);",
        "   `calibration_ok=False` and it needs calibration data; `need_serialization=True` and it",
        "   does not save; `need_torch_compile=True` and it does not declare torch.compile support;",
        "   `bits=` is not one it offers; or its weights plus the runtime reserve do not fit the budget.",
        "3. The rest are ranked by score: the use case's fit score plus the hardware rules' changes.",
        "   Whether the library is installed does not change the rank; it is reported, with the pip line.",
        "4. Nothing fits: the answer is empty, and names the closest option and what it would need.",
        "",
    ]
    for name in USE_CASES:
        spec = USE_CASE_SPECS[name]
        needs = [text for flag, text in ((spec.needs_peft, "be PEFT-trainable"),
                                          (spec.needs_serialization, "save a checkpoint"),
                                          (spec.needs_sub4, "offer a bit width under 4")) if flag]
        tried = ", ".join(map(str, spec.bits_order))
        md += [f"## Use case `{name}`", "",
               f"{spec.summary[0].upper()}{spec.summary[1:]} ({cite(spec.facts)}).",
               f"Bit widths tried, in order, when `bits=` is not given: {tried}."]
        if needs:
            md.append(f"A method must {' and '.join(needs)}.")
        md.append("")
        rows = [(i, f"`{f.method}`", f.score, f.why, cite(f.facts)) for i, f in enumerate(RANKINGS[name], 1)]
        md += _table(("rank", "method", "score", "why", "rests on"), rows) + [""]
    md += ["## Hardware rules", "", "Score changes by hardware (CUDA capability ranges: 8.0 Ampere, "
           "8.9 Ada, 9.0 Hopper, 10.0 Blackwell).", ""]
    rows = [(", ".join(r.use_cases), r.where, ", ".join(f"`{m}`" for m in r.methods), f"{r.change:+d}", r.why,
             cite(r.facts)) for r in HARDWARE_RULES]
    md += _table(("use cases", "hardware", "methods", "score", "why", "rests on"), rows) + [""]
    md += ["Capability floors applied on CUDA whatever a backend declares:", ""]
    md += [f"- methods named `*{f.marker}*`: {f.why} ({cite(f.facts)})." for f in CAPABILITY_FLOORS] + [""]
    md += [
        "## Memory estimate",
        "",
        "`estimated_gb` = linear-layer parameters x (bits + scale bits per weight) / 8 + parameters kept",
        f"in float (embeddings, `lm_head`, norms) x {FLOAT_BITS // 8} bytes, in GB of 2^30 bytes. It must",
        "fit the budget (`memory_gb=`, default: the hardware's memory, or RAM on a CPU) together with a",
        "runtime reserve for activations, KV cache and the framework:",
        "",
    ]
    rows = [(name, f"{base:g} GB + {per_b:g} GB per billion parameters")
            for name, (base, per_b) in RESERVE.items()]
    md += _table(("use case", "reserve"), rows)
    md += ["", f"The inference reserve is fit to {cite(['peak-13b'])} (batch 1, prompt 512); larger "
           f"batches need far more ({cite(['batch-16'])}). The fine-tuning reserve is quantkit's assumption. "
           f"A method that fits with less than {TIGHT_SPARE:.0%} of the budget to spare beyond the reserve "
           f"gets {TIGHT_CHANGE:+d} score ({cite(TIGHT_FACTS)}).", "",
           "Parameter counts come from `config.json` (dense, grouped-query, mixture-of-experts and "
           "latent attention), or from `params=`; with `params=` alone the float share is assumed for a "
           "Llama-shaped model with a 32,000-token vocabulary.", "",
           "Scale storage per method (the formats' layouts; a backend's own `group_size` default wins):", ""]
    rows = [(f"`{m}`", s.group_size or "per row", f"{s.scale_bits:g}", f"{overhead_bits(m):.3f}", s.layout)
            for m, s in SCHEMES.items()]
    md += _table(("method", "group size", "scale bits per group", "bits per weight", "layout"), rows)
    md += ["", f"Methods without an entry: {GENERIC_SCHEME.layout}.", ""]
    md += [
        "## Calibration cost",
        "",
        "Methods that need calibration data report an estimate on one A100 "
        f"({cite(['calibration-time', 'calibration-175b'])}): minutes = m8 x (parameters / 8B) ^ "
        f"{CALIBRATION_EXPONENT}, the "
        "power law through GPTQ's ~20 min for 8B and ~4 GPU hours for 175B, with m8 = "
        + ", ".join(f"{v:g} ({k})" for k, v in CALIBRATION_MINUTES_8B.items())
        + " (GPTQ's figure for other calibrated methods). A 7B model on one A10 took about 35 min and "
        f"16 GB at peak ({cite(['calibration-a10'])}); 2-, 3- and 4-bit cost the same. Methods that "
        "quantize while loading cost no calibration.",
        "",
        "## Accuracy tiers",
        "",
    ]
    md += _table(("tier", "what to expect", "rests on"),
                 [(t.label, t.says, cite(t.facts)) for t in TIERS.values()])
    md += ["", f"Larger models lose less ({cite(['larger-lose-less'])}). Every recommendation under 4 bits "
           "carries a quality warning.", "", "## Sources", "",
           f"Lines of `{FACTS_FILE}` (in the project's shared reference folder) that the rules cite, in "
           "our words:", ""]
    by_line = sorted(FACTS.items(), key=lambda kv: (kv[1].line, kv[0]))
    rows = [(f"L{f.line}", key, f.says) for key, f in by_line]
    md += _table(("line", "key", "what it says"), rows)
    return "\n".join(md) + "\n"


def write_guide(path: str | Path = GUIDE_PATH) -> Path:
    """Write the generated guide to ``path`` (default: docs/choosing.md) and return it."""
    path = Path(path)
    path.write_text(render_guide_markdown(), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantkit.selection_rules",
                                     description="Write or check docs/choosing.md from the selector's rules.")
    parser.add_argument("--write-docs", nargs="?", const=str(GUIDE_PATH), metavar="PATH",
                        help=f"write the guide (default {GUIDE_PATH})")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/choosing.md is out of date")
    args = parser.parse_args(argv)
    if args.check:
        current = GUIDE_PATH.read_text(encoding="utf-8") if GUIDE_PATH.is_file() else ""
        ok = current == render_guide_markdown()
        print("docs/choosing.md is up to date" if ok else "docs/choosing.md is out of date; run "
              "python -m quantkit.selection_rules --write-docs")
        return 0 if ok else 1
    if args.write_docs:
        print(f"wrote {write_guide(args.write_docs)}")
        return 0
    sys.stdout.write(render_guide_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
