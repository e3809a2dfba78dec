"""The methods the contract suite runs, with the options used and the tolerances allowed.

Tolerances are relative logit errors (Frobenius norm of the difference over the float logits'
norm) on the tiny random models of quantkit.testing. Random weights at init scale have no
outliers, so each bound is the method's weight error (measured, see docs/backends.md) with
headroom for the model's depth: 8-bit methods stay near 1 %, 4-bit near 10 %, and lower bit
widths grow fast. A bound far above what a method reaches would hide a broken backend, so each
sits within about 2x of the measured value.
"""

from __future__ import annotations

CASES: dict[str, dict] = {
    # case id: method, options, max relative logit error vs float, max dequantized-vs-quantized error
}
