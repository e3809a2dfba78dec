"""The methods the contract suite runs, with the options used and the tolerances allowed.

Tolerances are relative logit errors (Frobenius norm of the difference over the float logits'
norm) on the tiny random models of quantkit.testing. Random weights at init scale have no
outliers, so each bound is the method's weight error (measured, see docs/backends.md) with
headroom for the model's depth: 8-bit methods stay near 1 %, 4-bit near 10 %, and lower bit
widths grow fast. A bound far above what a method reaches would hide a broken backend, so each
sits within about 2x of the measured value.
"""

from __future__ import annotations

from quantkit.testing import TINY_CORPUS

# Calibration for gptq / awq: the shipped tiny corpus, 8 windows of 64 tokens.
CAL = {"calibration": str(TINY_CORPUS), "n_samples": 8, "seq_len": 64}

# Measured on the tiny models (Llama / GPT-2), see docs/backends.md; bounds are about 2x those.
# max_dequant_error: dequantized vs quantized logits. Exact-kernel methods dequantize to the same
# numbers (1e-5 allows float reassociation); bnb 4-bit runs a bf16 CPU kernel (4e-3 measured);
# LLM.int8() and int8-dynamic also quantize activations, which dequantize removes (1e-2 measured).
CASES: dict[str, dict] = {
    "bnb-nf4": {"method": "bnb-nf4", "max_error": 0.25, "max_dequant_error": 0.01},  # 0.13 / 0.12
    "bnb-fp4": {"method": "bnb-fp4", "max_error": 0.40, "max_dequant_error": 0.01},  # 0.20 / 0.16
    "bnb-int8": {"method": "bnb-int8", "max_error": 0.03, "max_dequant_error": 0.02},  # 0.014 / 0.014
    "hqq-4bit": {"method": "hqq", "options": {"bits": 4, "group_size": 64},
                 "max_error": 0.30, "max_dequant_error": 1e-5},  # 0.147 / 0.110
    "hqq-8bit": {"method": "hqq", "options": {"bits": 8, "group_size": 64},
                 "max_error": 0.02, "max_dequant_error": 1e-5},  # 0.0091 / 0.0064
    "hqq-3bit-axis0": {"method": "hqq", "options": {"bits": 3, "group_size": 32, "axis": 0},
                       "max_error": 0.55, "max_dequant_error": 1e-5},  # about 0.27 / 0.25
    "torchao-int8": {"method": "torchao-int8", "max_error": 0.025, "max_dequant_error": 1e-5},  # 0.011
    "torchao-int8-dynamic": {"method": "torchao-int8-dynamic", "max_error": 0.03,
                             "max_dequant_error": 0.025},  # 0.015 / 0.014
    "torchao-int4": {"method": "torchao-int4", "options": {"group_size": 128},
                     "max_error": 0.30, "max_dequant_error": 1e-5},  # 0.167 / 0.131
    "torchao-fp8": {"method": "torchao-fp8", "max_error": 0.08, "max_dequant_error": 1e-5},  # 0.044
    # compressed-tensors: W8A8 / FP8 quantize activations too, which dequantize removes.
    "ct-w4a16": {"method": "ct-w4a16", "max_error": 0.36, "max_dequant_error": 1e-5},  # 0.178 / 0.141
    "ct-w4a16-g32-asym": {"method": "ct-w4a16", "options": {"group_size": 32, "symmetric": False},
                          "max_error": 0.27, "max_dequant_error": 1e-5},  # 0.136 / 0.103
    "ct-w8a16": {"method": "ct-w8a16", "max_error": 0.025, "max_dequant_error": 1e-5},  # 0.011 / 0.0082
    "ct-w8a8": {"method": "ct-w8a8", "max_error": 0.03, "max_dequant_error": 0.02},  # 0.015 / 0.014
    "ct-fp8": {"method": "ct-fp8", "max_error": 0.12, "max_dequant_error": 0.08},  # 0.058 / 0.049
    "ct-nvfp4": {"method": "ct-nvfp4", "max_error": 0.32, "max_dequant_error": 1e-5},  # 0.161 / 0.129
    "ct-mxfp4": {"method": "ct-mxfp4", "max_error": 0.37, "max_dequant_error": 1e-5},  # 0.184 / 0.148
    # gptq / awq: gptqmodel's CPU 4-bit kernel runs activations in bf16 (dequantize is float32 math).
    "gptq-4bit": {"method": "gptq", "options": {"bits": 4, "group_size": 64, **CAL},
                  "max_error": 0.35, "max_dequant_error": 0.01},  # 0.174 / 0.097; dequant 4.6e-3
    "gptq-8bit": {"method": "gptq", "options": {"bits": 8, **CAL},
                  "max_error": 0.025, "max_dequant_error": 1e-3},  # 0.011 / 0.0064; dequant 3.4e-4
    "gptq-3bit-act-order": {"method": "gptq", "options": {"bits": 3, "group_size": 32, "desc_act": True,
                                                          "sym": False, **CAL},
                            "max_error": 0.55, "max_dequant_error": 1e-3},  # 0.261 / 0.164
    # AWQ on GPT-2 crashes inside gptqmodel; quantkit refuses it (tests/test_backend_awq.py).
    "awq": {"method": "awq", "options": {"group_size": 64, **CAL}, "archs": ("llama",),
            "max_error": 0.30, "max_dequant_error": 0.015},  # 0.149; dequant 6.8e-3 (bf16)
}
