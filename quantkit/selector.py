"""``qk.recommend()``: rank the registered methods for a use case, a machine and a model size.

A pure function of the backends' declared ``Capabilities`` and the tables in
``quantkit.selection_rules``: it imports no quantization library, so it answers in milliseconds
and can reason about hardware this machine does not have.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
from dataclasses import dataclass, field
from typing import Any

from quantkit import measured_ranking, registry
from quantkit import selection_rules as rules
from quantkit.backends.base import Backend
from quantkit.errors import QuantkitError
from quantkit.hardware import DEVICE_KINDS, Hardware
from quantkit.model_size import ModelSize, model_size
from quantkit.table import Table


@dataclass
class Recommendation:
    """One ranked method: what to pass to ``qk.quantize`` and why."""

    method: str
    options: dict[str, Any]
    bits: int
    estimated_gb: float
    reasons: list[str]
    installed: bool
    pip: str
    score: int
    accuracy: str
    calibration: str
    fits: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def code(self) -> str:
        """The ``qk.quantize`` call this recommendation stands for."""
        shown = {k: json.dumps(v) if isinstance(v, str) else repr(v) for k, v in self.options.items()}
        args = "".join(f", {k}={v}" for k, v in shown.items())
        return f'qk.quantize(model, "{self.method}"{args})'

    def describe(self, rank: int | None = None) -> str:
        head = f"{rank}. " if rank is not None else ""
        lines = [f"{head}{self.method} {self.bits}-bit, ~{self.estimated_gb:.1f} GB: {self.code}"]
        lines += [f"   - {r}" for r in self.reasons]
        lines += [f"   - warning: {w}" for w in self.warnings]
        if not self.installed:
            lines.append(f"   - not installed: {self.pip}")
        return "\n".join(lines)


class Recommendations(list):
    """Ranked ``Recommendation``s (best first), with ``excluded`` ({method: why}), the inputs, and
    ``closest`` (the nearest miss) when nothing fits. Text in a terminal, HTML in a notebook."""

    def __init__(self, items: list[Recommendation], excluded: dict[str, str], *, use_case: str,
                 hardware: Hardware, size: ModelSize, budget_gb: float | None,
                 closest: Recommendation | None = None, note: str = ""):
        super().__init__(items)
        self.excluded = excluded
        self.use_case = use_case
        self.hardware = hardware
        self.size = size
        self.budget_gb = budget_gb
        self.closest = closest
        self.note = note

    @property
    def title(self) -> str:
        budget = f"budget {self.budget_gb:.1f} GB" if self.budget_gb is not None else "no memory budget"
        size = f"{self.size.total / 1e9:.3g}B parameters"
        return f"Recommended for {self.use_case}, {size}, on {self.hardware} ({budget})"

    def table(self) -> Table:
        """The ranked methods as a ``quantkit.table.Table`` (``recs[i]`` holds the raw values)."""
        rows = [{"rank": i, "method": r.method, "bits": r.bits, "est. GB": f"{r.estimated_gb:.1f}",
                 "accuracy": r.accuracy, "calibration": r.calibration, "installed": r.installed,
                 "score": r.score, "options": _options_text(r.options), "reasons": "; ".join(r.reasons)}
                for i, r in enumerate(self, 1)]
        columns = ("rank", "method", "bits", "est. GB", "accuracy", "calibration", "installed", "score")
        return Table(rows, columns, title=self.title)

    def excluded_table(self) -> Table:
        """Excluded methods, those with the same reason on one row."""
        grouped: dict[str, list[str]] = {}
        for method, why in self.excluded.items():
            grouped.setdefault(why, []).append(method)
        rows = [{"method": ", ".join(methods), "why": why} for why, methods in grouped.items()]
        return Table(rows, ("method", "why"), title="Excluded")

    def to_text(self, details: int = 3) -> str:
        """Readable text: the ranked table, the reasons of the first ``details``, the excluded."""
        parts = [self.table().to_text() if self else self.title, f"Model: {self.size}"]
        if self.note:
            parts.append(self.note)
        parts += [r.describe(i) for i, r in enumerate(self[:details], 1)]
        if len(self) > details:
            parts.append("(the others' reasons: recs[i].reasons; all of it on the command line: --json)")
        if self.excluded:
            parts.append(self.excluded_table().to_text())
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        table = self.table()
        table.columns = [*table.columns, "options", "reasons"]
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        ranked = table._repr_html_() if self else f"<p>{html.escape(self.title)}</p>"
        excluded = self.excluded_table()._repr_html_() if self.excluded else ""
        return ranked + note + excluded

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: the inputs, the ranked methods, the excluded ones, the closest miss."""
        return {"use_case": self.use_case, "hardware": str(self.hardware), "model": str(self.size),
                "params": self.size.total, "budget_gb": self.budget_gb, "note": self.note,
                "recommendations": [dataclasses.asdict(r) for r in self], "excluded": dict(self.excluded),
                "closest": dataclasses.asdict(self.closest) if self.closest else None}


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


# -- the function ---------------------------------------------------------------------------------


def recommend(use_case: str = "inference", hardware: Hardware | str = "auto", model: Any = None, *,
              params: float | None = None, memory_gb: float | None = None, calibration_ok: bool = True,
              need_serialization: bool = False, need_torch_compile: bool = False,
              bits: int | None = None, measured: Any = None) -> Recommendations:
    """Rank the registered quantization methods for ``use_case`` on ``hardware``.

    use_case: "inference", "fine-tuning", "load-format" or "extreme-compression".
    hardware: "auto" (this machine), a device kind ("cpu", "cuda", ...) or a ``Hardware`` value,
        e.g. ``Hardware.cuda(capability=(9, 0), memory_gb=80)``.
    model: a local folder, a Hub id already in the local HF cache, or a config: only config.json is
        read, to count parameters. ``params`` gives (or overrides) the parameter count.
    memory_gb: the memory budget (default: the hardware's memory; RAM on a CPU).
    calibration_ok / need_serialization / need_torch_compile / bits: constraints.
    measured: a ``qk.compare`` report (or its JSON file): methods measured there are re-scored by
        their measured perplexity increase and speed and ranked first; failed ones are excluded.

    Returns ``Recommendations``: best first, each with options, bits, estimated_gb and reasons;
    ``.excluded`` says why every other method was left out.
    """
    use = rules.use_case(use_case)
    hw = _hardware(hardware)
    size = model_size(model, params)
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8):
        raise QuantkitError(f"bits={bits!r} must be a whole number from 1 to 8 (or None: quantkit chooses).")
    if bits is not None and use.needs_sub4 and bits >= 4:
        raise QuantkitError(f"{use.name} means under 4 bits; bits={bits} contradicts it. Use bits=3, 2 or 1, "
                            "or use_case='inference'.")
    budget = float(memory_gb) if memory_gb is not None else hw.memory_gb
    if budget is not None and budget <= 0:
        raise QuantkitError(f"memory_gb={memory_gb!r} must be a positive number of GB.")
    constraints = dict(calibration_ok=calibration_ok, need_serialization=need_serialization,
                       need_torch_compile=need_torch_compile, bits=bits)
    backends = registry.all_methods()
    ranked: list[tuple[int, int, Recommendation]] = []
    excluded: dict[str, str] = {}
    misses: list[Recommendation] = []
    named = rules.named_methods(use.name)
    order = [*named, *[m for m in backends if m not in named]]
    for position, name in enumerate(order):
        backend = backends.get(name)
        if backend is None:
            excluded[name] = "not available in this quantkit build (no backend registered under this name)"
            continue
        blockers = _blockers(name, backend, use, hw, constraints)
        if blockers:
            excluded[name] = "; ".join(blockers)
            continue
        rec = _evaluate(name, backend, use, hw, size, budget, bits)
        if rec.fits:
            ranked.append((-rec.score, position, rec))
        else:
            misses.append(rec)
            excluded[name] = rec.reasons[0]
    recs = [r for _, _, r in sorted(ranked, key=lambda t: t[:2])]
    if measured is not None:
        recs = measured_ranking.apply(recs, excluded, _report(measured), use.name, hw.device)
    closest, note = (None, "") if recs else _closest(misses, backends, use, hw, size, budget, constraints)
    return Recommendations(recs, excluded, use_case=use.name, hardware=hw, size=size, budget_gb=budget,
                           closest=closest, note=note)


def _report(measured: Any):
    from quantkit.report import Report

    return measured if isinstance(measured, Report) else Report.from_json(measured)


def _hardware(hardware: Hardware | str) -> Hardware:
    if isinstance(hardware, Hardware):
        return hardware
    key = str(hardware).strip().lower()
    if key == "auto":
        from quantkit.hardware import hardware as detected

        return detected()
    if key in DEVICE_KINDS:
        return getattr(Hardware, key)()
    raise QuantkitError(f"hardware={hardware!r}: use 'auto', one of {', '.join(DEVICE_KINDS)}, or a "
                        "qk.Hardware value such as qk.Hardware.cuda(capability=(8, 0), memory_gb=24).")


def _blockers(name: str, backend: type[Backend], use: rules.UseCase, hw: Hardware,
              constraints: dict[str, Any]) -> list[str]:
    """Every reason ``backend`` cannot serve this request (empty when it can)."""
    caps = backend.capabilities
    why = []
    if use.needs_peft and not caps.peft_trainable:
        why.append(f"not PEFT-trainable, and {use.name} trains adapters on the quantized model "
                   f"({rules.cite(use.facts)})")
    if use.needs_serialization and not caps.serializable:
        why.append(f"does not save a checkpoint ({rules.cite(use.facts)})")
    if use.needs_sub4 and not any(b < 4 for b in caps.bits):
        why.append(f"offers {_bits_text(caps.bits)} bits, none under 4 ({rules.cite(use.facts)})")
    unusable = backend.unusable_reason(hw)
    floor = _floor(name, hw)
    if floor:
        why.append(floor)
    if unusable and not (floor and "capability" in unusable):
        why.append(f"{unusable} ({rules.cite(['caps-table'])})")
    if caps.needs_calibration and not constraints["calibration_ok"]:
        why.append(f"needs calibration data, and calibration_ok=False ({rules.cite(['best-4bit'])})")
    if constraints["need_serialization"] and not use.needs_serialization and not caps.serializable:
        why.append("does not save a checkpoint, and need_serialization=True")
    if constraints["need_torch_compile"] and not caps.torch_compile:
        why.append("does not declare torch.compile support, and need_torch_compile=True")
    bits = constraints["bits"]
    if bits is not None and bits not in caps.bits:
        why.append(f"offers {_bits_text(caps.bits)} bits, not {bits}")
    elif bits is None and not _candidate_bits(caps.bits, use, None) and not use.needs_sub4:
        why.append(f"offers {_bits_text(caps.bits)} bits; {use.name} tries {_bits_text(use.bits_order)} "
                   "(pass bits= to choose)")
    return why


def _floor(name: str, hw: Hardware) -> str | None:
    if hw.kind != "cuda" or not hw.capability:
        return None
    for floor in rules.CAPABILITY_FLOORS:
        if floor.marker in name and tuple(hw.capability) < floor.floor:
            have = ".".join(map(str, hw.capability))
            return f"{floor.why}; this GPU has {have} ({rules.cite(floor.facts)})"
    return None


def _bits_text(bits: tuple[int, ...]) -> str:
    return "/".join(map(str, bits))


def _candidate_bits(offered: tuple[int, ...], use: rules.UseCase, bits: int | None) -> list[int]:
    if bits is not None:
        return [bits] if bits in offered else []
    return [b for b in use.bits_order if b in offered]


def _default_group_size(backend: type[Backend]) -> int | None:
    for f in dataclasses.fields(backend.options_type):
        if f.name == "group_size" and isinstance(f.default, int):
            return f.default
    return None


def _estimate(name: str, backend: type[Backend], size: ModelSize, bits: int) -> float:
    overhead = rules.overhead_bits(name, _default_group_size(backend))
    return rules.weights_gb(size.linear, size.kept_float, bits, overhead)


def _evaluate(name: str, backend: type[Backend], use: rules.UseCase, hw: Hardware, size: ModelSize,
              budget: float | None, bits: int | None, candidates: list[int] | None = None) -> Recommendation:
    """The recommendation for ``backend`` at the first candidate bit width that fits (or, when none
    fits, the smallest one, with ``fits=False`` and the memory reason first)."""
    caps = backend.capabilities
    candidates = candidates or _candidate_bits(caps.bits, use, bits)
    reserve = rules.reserve_gb(use.name, size.total)
    estimates = {b: _estimate(name, backend, size, b) for b in candidates}
    fitting = [b for b in candidates if budget is None or estimates[b] + reserve <= budget]
    chosen = fitting[0] if fitting else min(candidates, key=lambda b: estimates[b])
    gb = estimates[chosen]
    fits = bool(fitting)

    fit = rules.fit(use.name, name)
    score = fit.score if fit else rules.GENERIC_SCORE
    reasons = [_memory_reason(gb, chosen, reserve, budget, use, fits)]
    reasons.append(f"use case: {fit.why} ({rules.cite(fit.facts)})" if fit else
                   f"use case: {rules.GENERIC_WHY}")
    if fits and budget is not None and budget - gb - reserve < rules.TIGHT_SPARE * budget:
        score += rules.TIGHT_CHANGE
        reasons.append(f"memory: tight, under {rules.TIGHT_SPARE:.0%} of the budget to spare; longer prompts "
                       f"or larger batches may not fit (score {rules.TIGHT_CHANGE:+d}; "
                       f"{rules.cite(rules.TIGHT_FACTS)})")
    for rule in rules.HARDWARE_RULES:
        if rule.applies(use.name, hw.kind, tuple(hw.capability) if hw.capability else None, name):
            score += rule.change
            reasons.append(f"hardware: {rule.why} (score {rule.change:+d}; {rules.cite(rule.facts)})")
    reasons.append(_hardware_reason(caps, hw))
    calibration = _calibration(name, caps, size, hw)
    reasons.append(f"calibration: {calibration}")
    tier = rules.tier(chosen, caps.needs_calibration)
    reasons.append(f"accuracy: {tier.says} ({rules.cite(tier.facts)})")
    if size.total >= 30e9 and chosen < 8:
        reasons.append(f"accuracy: larger models lose less ({rules.cite(['larger-lose-less'])})")
    if fits:  # memory first only for a miss; for a fit, the use case leads
        reasons.append(reasons.pop(0))
    warnings = []
    if chosen < 4:
        warnings.append(f"{chosen}-bit weights lose much quality; benchmark before production "
                        f"({rules.cite(['extreme', 'hqq-fast'])})")
    short_cal = "none" if not caps.needs_calibration else \
        f"~{_duration(rules.calibration_minutes(rules.family(name), size.total))} (A100)"
    return Recommendation(
        method=name, options=_options(backend, chosen, hw), bits=chosen, estimated_gb=round(gb, 3),
        reasons=reasons, installed=backend.is_installed(), pip=backend.pip_line(), score=score,
        accuracy=tier.label, calibration=short_cal, fits=fits, warnings=warnings)


def _memory_reason(gb: float, bits: int, reserve: float, budget: float | None, use: rules.UseCase,
                   fits: bool) -> str:
    need = f"~{gb:.1f} GB of {bits}-bit weights + ~{reserve:.1f} GB runtime reserve for {use.name}"
    if budget is None:
        return f"memory: {need}; no budget known (pass memory_gb=)"
    if fits:
        return f"memory: {need} fits the {budget:.1f} GB budget ({budget - gb - reserve:.1f} GB to spare)"
    return f"does not fit: {need} = ~{gb + reserve:.1f} GB > {budget:.1f} GB budget"


def _hardware_reason(caps, hw: Hardware) -> str:
    text = f"hardware: has {hw.kind} kernels (declared by the backend)"
    if hw.kind == "cuda" and caps.min_cuda_capability:
        need = ".".join(map(str, caps.min_cuda_capability))
        have = ".".join(map(str, hw.capability)) if hw.capability else "unknown"
        text += f"; needs capability {need}, this GPU has {have}"
    return text


def _calibration(name: str, caps, size: ModelSize, hw: Hardware) -> str:
    if not caps.needs_calibration:
        if caps.on_the_fly:
            return f"none: quantized while loading, no calibration data ({rules.cite(['bnb-easiest'])})"
        return "no calibration data; a separate quantization step"
    fam = rules.family(name)
    minutes = rules.calibration_minutes(fam, size.total)
    source = fam if fam in rules.CALIBRATION_MINUTES_8B else "gptq"
    text = (f"needs calibration data and a separate step, about {_duration(minutes)} on one A100 for "
            f"{size.total / 1e9:.3g}B parameters (from {source}'s documented figures, "
            f"{rules.cite(['calibration-time', 'calibration-175b'])}); can overfit the "
            f"calibration set ({rules.cite(['best-4bit'])})")
    if hw.kind == "cpu":
        text += "; on a CPU expect far longer (no documented CPU figure)"
    return text


def _duration(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _options(backend: type[Backend], bits: int, hw: Hardware) -> dict[str, Any]:
    """Keyword options for ``qk.quantize``: bits and group size where the method takes them, and
    the device when it is not the CPU."""
    names = {f.name: f for f in dataclasses.fields(backend.options_type)}
    options: dict[str, Any] = {}
    if "bits" in names:
        options["bits"] = bits
    if "group_size" in names and isinstance(names["group_size"].default, int):
        options["group_size"] = names["group_size"].default
    if hw.device != "cpu":
        options["device"] = hw.device
    return options


def _closest(misses: list[Recommendation], backends: dict[str, type[Backend]], use: rules.UseCase,
             hw: Hardware, size: ModelSize, budget: float | None,
             constraints: dict[str, Any]) -> tuple[Recommendation | None, str]:
    """When nothing fits: the smallest miss, and whether fewer bits would fit (outside this use case)."""
    if not misses:
        return None, "No registered method can serve this request; see excluded for why."
    closest = min(misses, key=lambda r: r.estimated_gb)
    need = closest.estimated_gb + rules.reserve_gb(use.name, size.total)
    note = (f"Nothing fits in {budget:.1f} GB. Closest: {closest.method} {closest.bits}-bit needs "
            f"~{need:.1f} GB (weights + reserve). Use a machine with more memory (or a larger memory_gb=), "
            "or a smaller model.")
    if constraints["bits"] is None and not use.needs_sub4:
        lower = []
        for rec in misses:
            sub4 = [b for b in backends[rec.method].capabilities.bits if b < 4]
            if sub4:
                alt = _evaluate(rec.method, backends[rec.method], use, hw, size, budget, None,
                                candidates=sorted(sub4, reverse=True))
                if alt.fits:
                    lower.append(f"{alt.method} {alt.bits}-bit (~{alt.estimated_gb:.1f} GB)")
        if lower:
            note += (f" Under 4 bits it would fit: {', '.join(lower)}: try use_case='extreme-compression' "
                     "or bits=..., with a large quality loss.")
    return closest, note


# -- command line ---------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``quantkit recommend`` to the ``quantkit`` command's subparsers."""
    p = subparsers.add_parser("recommend", help="which method suits a use case, a machine and a model")
    p.add_argument("model", nargs="?", help="model folder or Hub id in the local cache (config.json only)")
    p.add_argument("--use-case", "-u", default="inference", choices=rules.USE_CASES)
    p.add_argument("--params", type=float,
                   help="parameter count, e.g. 7e9 (instead of a model, or overriding its count)")
    p.add_argument("--hardware", default="auto", choices=("auto", *DEVICE_KINDS),
                   help="'auto' detects this machine; a kind declares one (with --capability, --memory-gb)")
    p.add_argument("--capability", help="CUDA compute capability of a declared GPU, e.g. 8.0 or 9.0")
    p.add_argument("--memory-gb", type=float, dest="memory_gb",
                   help="memory budget in GB (and a declared device's memory)")
    p.add_argument("--no-calibration", action="store_true", help="exclude methods that need calibration data")
    p.add_argument("--need-serialization", action="store_true")
    p.add_argument("--need-torch-compile", action="store_true")
    p.add_argument("--bits", type=int)
    p.add_argument("--measured", metavar="REPORT.json",
                   help="re-rank by a compare report written by `quantkit compare --json`")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--write-docs", nargs="?", const=str(rules.GUIDE_PATH), metavar="PATH",
                   help="write docs/choosing.md from the selector's rules and exit")
    p.set_defaults(run=cmd_recommend)
    return p


def declared_hardware(kind: str, capability: str | None = None, memory_gb: float | None = None) -> Hardware:
    """A Hardware value from command-line words: kind, "8.0"-style capability, memory."""
    if kind == "auto":
        if capability:
            raise QuantkitError("--capability describes a declared GPU: add --hardware cuda.")
        return _hardware("auto")
    extra = {} if memory_gb is None else {"ram_gb" if kind == "cpu" else "memory_gb": memory_gb}
    if kind == "cuda":
        return Hardware.cuda(capability=_capability(capability or "8.0"), **extra)
    if capability:
        raise QuantkitError(f"--capability applies to --hardware cuda, not {kind}.")
    return getattr(Hardware, kind)(**extra)


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = text.strip().removeprefix("sm_").partition(".")
    if not (major.isdigit() and (minor or "0").isdigit()):
        raise QuantkitError(f"--capability {text!r}: write it as MAJOR.MINOR, e.g. 8.0 (A100) or 9.0 (H100).")
    return int(major), int(minor or 0)


def cmd_recommend(args: argparse.Namespace) -> None:
    if args.write_docs:
        print(f"wrote {rules.write_guide(args.write_docs)}")
        return
    hw = declared_hardware(args.hardware, args.capability, args.memory_gb)
    recs = recommend(args.use_case, hw, args.model, params=args.params, memory_gb=args.memory_gb,
                     calibration_ok=not args.no_calibration, need_serialization=args.need_serialization,
                     need_torch_compile=args.need_torch_compile, bits=args.bits, measured=args.measured)
    print(json.dumps(recs.to_dict(), indent=2) if args.json else recs)
