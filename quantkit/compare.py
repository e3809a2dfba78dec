"""``qk.compare``: quantize one float model with several methods and measure them side by side.

Every method goes through the same steps: quantize from the float checkpoint, save, free, load the
saved folder, evaluate, time. The float model goes through the same load/evaluate/time steps and is
the first row. A method that fails records its error in its row; the report still completes.
"""

from __future__ import annotations

import datetime
import re
import tempfile
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from quantkit import api, registry
from quantkit.errors import InvalidOptionError, SaveError
from quantkit.eval_text import eval_token_ids, is_text_file
from quantkit.footprint import bits_per_weight, memory_bytes, weight_file_bytes
from quantkit.latency import measure_latency
from quantkit.measure import measure, release_memory
from quantkit.models import (
    ModelSource,
    check_float_folder,
    linear_layers,
    load_float_model,
    resolve_model_path,
)
from quantkit.quality import Reference, evaluate, target_count, windows
from quantkit.report import METRIC_KEYS, Report
from quantkit.saving import copy_tokenizer_files

DEFAULT_METHODS = ("bnb-nf4", "bnb-int8", "hqq", "torchao-int8", "torchao-int4", "gptq", "awq")
DEFAULT_METRICS = tuple(METRIC_KEYS)
MB = 1024 * 1024
MAX_WINDOW = 1024
MAX_WARNINGS = 5


@dataclass
class EvalSettings:
    """How quality and speed are measured (see docs/metrics.md)."""

    window: int | None = None  # tokens per perplexity window (default: context length, at most 1024)
    stride: int | None = None  # tokens between windows (default: window // 2)
    max_eval_tokens: int | None = None  # cut the eval text (default: all of it)
    batch_size: int = 1  # latency batch size
    prompt_tokens: int = 128  # latency prompt length
    decode_tokens: int = 32  # latency greedy decode steps
    latency_repeats: int = 3

    def validate(self) -> None:
        for name in ("window", "stride", "max_eval_tokens"):
            _positive(name, getattr(self, name), optional=True)
        for name in ("batch_size", "prompt_tokens", "decode_tokens", "latency_repeats"):
            _positive(name, getattr(self, name))


def _positive(name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name}={value!r} must be a positive whole number.")


@dataclass
class MethodRun:
    """One row to measure: a label, a registered method and its options."""

    label: str
    method: str
    options: dict[str, Any]


def method_runs(methods: Any) -> list[MethodRun]:
    """``["hqq", ("hqq", {"bits": 3}), {"method": "gptq", "bits": 8, "label": "gptq-8"}]`` -> runs.

    Unknown names raise at once (before any work); labels must be unique.
    """
    runs = []
    for item in methods:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
            name, options = item[0], dict(item[1])
        elif isinstance(item, dict) and "method" in item:
            options = dict(item)
            name = options.pop("method")
        else:
            raise InvalidOptionError(
                f"methods entry {item!r} is not understood: use a name ('hqq'), a (name, options) pair "
                "(('hqq', {'bits': 3})) or a dict ({'method': 'hqq', 'bits': 3, 'label': 'hqq-3bit'})."
            )
        registry.get(name)  # UnknownMethodError with the nearest names
        label = options.pop("label", None) or _label(name, options)
        runs.append(MethodRun(label, name, options))
    labels = [r.label for r in runs]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise InvalidOptionError(f"methods {duplicates} appear twice; give each run a distinct 'label'.")
    return runs


def _label(name: str, options: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in options.items() if k not in ("calibration", "tokenizer")]
    return " ".join([name, *shown])


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRIC_KEYS]
    if unknown or not metrics:
        raise InvalidOptionError(f"metrics {unknown or '()'} not known; "
                                 f"choose from {', '.join(METRIC_KEYS)}.")
    return metrics


def compare(model: str | Path | nn.Module | None = None, methods: Any = None, *, eval_text: Any = None,
            calibration: Any = None, metrics: Any = DEFAULT_METRICS, tokenizer: Any = None,
            dtype: torch.dtype | str | None = None, device: str = "cpu", output_dir: str | Path | None = None,
            progress: bool = True, **settings: Any) -> Report:
    """Quantize ``model`` with each of ``methods`` and measure every result next to the float model.

    model: a float model folder, a Hub id already in the local cache, or a loaded model; default:
        the small trained Llama shipped with quantkit.
    methods: names, ``(name, options)`` pairs or dicts with "method" (and an optional "label");
        default: ``DEFAULT_METHODS``.
    eval_text: text, a .txt path, strings, a dataset, or token ids; default: the held-out text
        shipped with quantkit. calibration: data for methods that need it (default: the shipped
        calibration text). metrics: any of "size", "quantize_time", "load_time", "perplexity",
        "kl", "latency", "peak_memory". output_dir: keep the checkpoints there (default: a
        temporary folder, removed). settings: window, stride, max_eval_tokens, batch_size,
        prompt_tokens, decode_tokens, latency_repeats (see ``EvalSettings``).
    """
    runs = method_runs(DEFAULT_METHODS if methods is None else methods)
    metrics = _check_metrics(metrics)
    unknown = sorted(set(settings) - set(EvalSettings.__dataclass_fields__))
    if unknown:
        raise InvalidOptionError(f"compare() got unknown settings {unknown}; known: "
                                 f"{', '.join(EvalSettings.__dataclass_fields__)}.")
    eval_settings = EvalSettings(**settings)
    eval_settings.validate()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quantkit-compare-")))
        work = _output_folder(output_dir) if output_dir is not None else scratch
        session = _Session(work, scratch, metrics, eval_settings, device, progress)
        stack.enter_context(_quiet_libraries())
        session.prepare(model, dtype, tokenizer, eval_text)
        rows = [_with_warnings(session.baseline)]
        for run in session.bar(runs):
            rows.append(_with_warnings(session.run_method, run, calibration, tokenizer))
        return Report(rows, session.meta, metrics)


def _output_folder(output_dir: str | Path) -> Path:
    folder = Path(output_dir)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise SaveError(f"output_dir {str(folder)!r} exists and is not an empty folder; choose a new one.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _Session:
    """The state shared by every row of one ``compare`` call."""

    def __init__(self, work: Path, scratch: Path, metrics: tuple[str, ...], settings: EvalSettings,
                 device: str, progress: bool):
        self.work, self.scratch, self.metrics, self.settings = work, scratch, metrics, settings
        self.device, self.progress = device, progress
        self.started = time.perf_counter()
        self.meta: dict[str, Any] = {}
        self._outer = None

    # -- setup --------------------------------------------------------------------------------
    def prepare(self, model: Any, dtype: Any, tokenizer: Any, eval_text: Any) -> None:
        """Write the float checkpoint all methods start from; tokenize the eval text; plan windows."""
        source_path, source = self._source(model, dtype)
        float_model = source.model()
        self.float_dir = self.work / "float"
        float_model.save_pretrained(self.float_dir, safe_serialization=True)
        copy_tokenizer_files(source_path, self.float_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(self.float_dir)
        self.tokenizer = tokenizer or _folder_tokenizer(self.float_dir)
        self.layers = {name: layer.weight.numel() for name, layer in linear_layers(float_model, ("lm_head",))}
        config = float_model.config
        self.vocab = config.get_text_config().vocab_size
        params = sum(p.numel() for p in float_model.parameters())
        dtype_name = str(float_model.dtype).removeprefix("torch.")
        del float_model, source
        release_memory()

        s = self.settings
        self.ids = eval_token_ids(eval_text, self.tokenizer, s.max_eval_tokens)
        context = getattr(config.get_text_config(), "max_position_embeddings", None) or MAX_WINDOW
        window = min(s.window or min(context, MAX_WINDOW), self.ids.numel())
        stride = min(s.stride or max(window // 2, 1), window)
        self.plan = windows(self.ids.numel(), window, stride)
        self.reference = Reference(self.scratch / "float-log-probs.npy", self.plan, self.vocab)
        self.float_bytes = weight_file_bytes(self.float_dir)
        self.meta = {
            "model": str(source_path) if source_path else type(model).__name__, "parameters": params,
            "dtype": dtype_name, "device": self.device, "hardware": str(api.hardware_for(self.device)),
            "eval_text": _describe_eval(eval_text), "eval_tokens": int(self.ids.numel()),
            "scored_tokens": target_count(self.plan), "window": window, "stride": stride,
            "batch_size": s.batch_size, "prompt_tokens": min(s.prompt_tokens, self.ids.numel()),
            "decode_tokens": s.decode_tokens, "latency_repeats": s.latency_repeats,
            "versions": _versions(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def _source(self, model: Any, dtype: Any) -> tuple[Path | None, ModelSource]:
        from quantkit.spec import parse_dtype

        dtype = parse_dtype(dtype)
        if model is None:
            from quantkit import shipped

            model = shipped.demo_model_path()
        if isinstance(model, nn.Module):
            name = getattr(model, "name_or_path", None)
            path = Path(name) if name and Path(name).is_dir() else None
            return path, ModelSource(given=model, dtype=dtype)
        path = resolve_model_path(model)
        check_float_folder(path)
        return path, ModelSource(path=path, dtype=dtype)

    def bar(self, runs: list[MethodRun]):
        self._outer = tqdm(runs, desc="compare", unit="method", disable=not self.progress)
        return self._outer

    # -- rows ---------------------------------------------------------------------------------
    def baseline(self) -> dict[str, Any]:
        row: dict[str, Any] = {"method": f"float ({self.meta['dtype']})", "method_name": None, "options": {}}
        self._sizes(row, self.float_dir)
        if "quantize_time" in self.metrics:
            row["quantize_s"] = 0.0
        self._status("float: evaluate")
        self._evaluate(row, lambda: load_float_model(self.float_dir, device=self.device), record=True)
        self.base = dict(row)
        self._keep_requested(row)
        return row

    def run_method(self, run: MethodRun, calibration: Any, tokenizer: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"method": run.label, "method_name": run.method,
                               "options": _json_options(run.options)}
        folder = self.work / re.sub(r"[^A-Za-z0-9_.-]+", "_", run.label)
        try:
            options = self._options(run, calibration, tokenizer)
            self._status(f"{run.label}: quantize")
            with measure() as quantizing:
                quantized = api.quantize(self.float_dir, run.method, device=self.device, **options)
            row["quantize_s"] = quantizing.seconds
            row["quantize_peak_mb"] = self._peak(quantizing)
            self._status(f"{run.label}: save")
            api.save(quantized, folder)
            del quantized
            self._sizes(row, folder)
            self._status(f"{run.label}: evaluate")
            self._evaluate(row, lambda: api.load(folder, device=self.device), record=False)
        except Exception as exc:  # noqa: BLE001 - a failing method is a row, not a crash
            row["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            release_memory()
        self._keep_requested(row)
        return row

    def _options(self, run: MethodRun, calibration: Any, tokenizer: Any) -> dict[str, Any]:
        options = dict(run.options)
        backend = registry.get(run.method)
        if backend.capabilities.needs_calibration:
            if "calibration" not in options:
                options["calibration"] = calibration if calibration is not None else _shipped_calibration()
            if tokenizer is not None:
                options.setdefault("tokenizer", tokenizer)
        return options

    def _sizes(self, row: dict[str, Any], folder: Path) -> None:
        size = weight_file_bytes(folder)
        row["size_mb"] = size / MB
        row["size_ratio"] = size / self.float_bytes
        row["bits_per_weight"] = bits_per_weight(folder, self.layers)

    def _evaluate(self, row: dict[str, Any], load, record: bool) -> None:
        """Load the checkpoint, then measure memory, quality and latency; the peak covers it all."""
        wants_quality = bool({"perplexity", "kl"} & set(self.metrics))
        with measure() as running:
            start = time.perf_counter()
            model = load()
            row["load_s"] = time.perf_counter() - start
            row["memory_mb"] = memory_bytes(model) / MB
            if wants_quality:
                self._quality(row, model, record)
            if "latency" in self.metrics:
                self._status(f"{row['method']}: latency")
                s = self.settings
                latency = measure_latency(model, self.ids[: s.prompt_tokens], s.batch_size, s.decode_tokens,
                                          s.latency_repeats)
                row["prefill_ms_per_token"] = latency.prefill_ms_per_token
                row["decode_tokens_per_s"] = latency.decode_tokens_per_s
            del model
        row["peak_mb"] = self._peak(running)

    def _quality(self, row: dict[str, Any], model: nn.Module, record: bool) -> None:
        bar = tqdm(total=target_count(self.plan), desc=f"{row['method']}: eval", unit="tok", leave=False,
                   disable=not self.progress)
        with bar:
            result = evaluate(model, self.ids, self.plan, reference=None if record else self.reference,
                              record=self.reference if record else None, progress=bar)
        row["perplexity"] = result.perplexity
        if record:
            row["ppl_change_pct"], row["kl"], row["top1"] = 0.0, 0.0, 1.0
        else:
            row["ppl_change_pct"] = 100 * (result.perplexity / self.base["perplexity"] - 1)
            row["kl"], row["top1"] = result.kl, result.top1

    def _peak(self, measured) -> float:
        on_gpu = self.device.startswith("cuda") and measured.cuda_peak_bytes is not None
        return (measured.cuda_peak_bytes if on_gpu else measured.peak_rss_bytes) / MB

    def _keep_requested(self, row: dict[str, Any]) -> None:
        wanted = {k for m in self.metrics for k in METRIC_KEYS[m]}
        kept = wanted | {"method", "method_name", "options", "error", "warnings"}
        for key in [k for k in row if k not in kept]:
            del row[key]

    def _status(self, text: str) -> None:
        if self._outer is not None:
            self._outer.set_postfix_str(text)


@contextmanager
def _quiet_libraries():
    """No per-file progress bars from transformers while compare draws its own."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _with_warnings(measure_row, *args) -> dict[str, Any]:
    """Run one row; the warnings it raises (often once per forward pass) go into its "warnings"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = measure_row(*args)
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if messages:
        row["warnings"] = messages[:MAX_WARNINGS]
    return row


def _shipped_calibration() -> str:
    from quantkit import shipped

    return str(shipped.calibration_text_path())


def _folder_tokenizer(folder: Path):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    except Exception:  # noqa: BLE001 - no tokenizer files: token ids must be given
        return None


def _describe_eval(eval_text: Any) -> str:
    if eval_text is None:
        return "quantkit's held-out text"
    if is_text_file(eval_text):
        return Path(eval_text).name
    if isinstance(eval_text, torch.Tensor):
        return "token ids"
    return type(eval_text).__name__


def _json_options(options: dict[str, Any]) -> dict[str, Any]:
    from quantkit.calibration import describe

    return {k: describe(v) if k == "calibration" else v if isinstance(v, (int, float, str, bool, list))
            else str(v) for k, v in options.items()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("quantkit", "torch", "transformers", "bitsandbytes", "hqq", "torchao", "gptqmodel",
                    "compressed-tensors"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out
