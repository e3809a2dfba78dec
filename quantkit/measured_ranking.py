"""Re-rank recommendations by a ``qk.compare`` report: what was measured beats what was assumed.

Rules (docs/metrics.md, "Re-ranking recommendations"): a method whose run failed is excluded with
its error; a measured method's score changes by its perplexity increase over the float model
(PPL_POINTS per percent, capped) and, for inference on the hardware the report was taken on, by its
decode speed relative to the float model (SPEED_POINTS); measured methods rank before unmeasured
ones, which keep their rule-based score.
"""

from __future__ import annotations

from typing import Any

PPL_POINTS = {"extreme-compression": 1.0}  # score points lost per % of perplexity increase
DEFAULT_PPL_POINTS = 2.0
PPL_CAP = 40
SPEED_POINTS = ((1.0, 5), (0.5, 0), (0.25, -5), (0.0, -10))  # decode speed vs float -> points


def _rows_by_method(report) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in report.rows[1:]:
        if row.get("method_name"):
            rows.setdefault(row["method_name"], []).append(row)
    return rows


def _pick(rows: list[dict[str, Any]], bits: int) -> dict[str, Any]:
    """The row measured with the recommended bits if there is one, else the first that completed."""
    same_bits = [r for r in rows if r.get("options", {}).get("bits") == bits and not r.get("error")]
    done = [r for r in rows if not r.get("error")]
    return (same_bits or done or rows)[0]


def _speed_points(ratio: float) -> int:
    return next(points for floor, points in SPEED_POINTS if ratio >= floor)


def apply(recs: list, excluded: dict[str, str], report, use_case: str, device_kind: str) -> list:
    """The recommendations re-scored and re-ordered by ``report``; failed methods move to ``excluded``."""
    measured_rows = _rows_by_method(report)
    base = report.baseline
    same_device = str(report.meta.get("device", "cpu")).split(":")[0] == device_kind
    measured, unmeasured = [], []
    for rec in recs:
        rows = measured_rows.get(rec.method)
        if not rows:
            rec.reasons.append("not measured in the compare report: ranked after the measured methods")
            unmeasured.append(rec)
            continue
        row = _pick(rows, rec.bits)
        if row.get("error"):
            error = row["error"].splitlines()[0]
            excluded[rec.method] = f"failed when measured here ({row['method']}): {error}"
            continue
        _rescore(rec, row, base, use_case, same_device, report.meta.get("device", "cpu"))
        measured.append(rec)
    measured.sort(key=lambda r: -r.score)
    return measured + unmeasured


def _rescore(rec, row: dict[str, Any], base: dict[str, Any], use_case: str, same_device: bool,
             device: str) -> None:
    label = row["method"]
    change = row.get("ppl_change_pct")
    if change is not None:
        points = -min(PPL_CAP, round(max(change, 0.0) * PPL_POINTS.get(use_case, DEFAULT_PPL_POINTS)))
        rec.score += points
        kl = f", KL {row['kl']:.3g}" if row.get("kl") is not None else ""
        rec.reasons.insert(0, f"measured here ({label}): perplexity {change:+.2f} % vs float{kl} "
                              f"(score {points:+d})")
    if row.get("size_ratio") is not None:
        rec.reasons.insert(1, f"measured checkpoint: {row['size_ratio']:.2f} of the float model's size, "
                              f"{row.get('bits_per_weight') or 0:.2f} bits per weight")
    speed, base_speed = row.get("decode_tokens_per_s"), base.get("decode_tokens_per_s")
    if use_case == "inference" and speed and base_speed:
        if same_device:
            points = _speed_points(speed / base_speed)
            rec.score += points
            rec.reasons.insert(1, f"measured decode speed: {speed / base_speed:.2f}x the float model's "
                                  f"(score {points:+d})")
        else:
            rec.warnings.append(f"speed was measured on {device}, not on the hardware recommended for; "
                                "it was not used in the score")
