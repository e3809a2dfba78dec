"""quantize / save / load / dequantize: resolve the method, validate, call its backend."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantkit import formats, registry
from quantkit.backends.base import Backend, LoadOptions
from quantkit.errors import HardwareNotSupportedError, NotQuantizedError, UnsupportedModelError
from quantkit.hardware import Hardware, hardware
from quantkit.models import ModelSource, check_float_folder, linear_layers, read_config, resolve_model_path
from quantkit.saving import check_target, copy_tokenizer_files, write_atomically, write_json
from quantkit.spec import Options, build_options, parse_dtype
from quantkit.version import __version__

ModelLike = str | Path | nn.Module


def hardware_for(device: str) -> Hardware:
    """The Hardware a device string runs on; an error if this machine has no such device."""
    kind = device.split(":")[0]
    if kind == "cpu":
        return hardware() if hardware().kind == "cpu" else Hardware.cpu()
    detected = hardware()
    if detected.device != kind:
        raise HardwareNotSupportedError(
            f"device={device!r} was asked for, but this machine has {detected.kind} "
            f"({detected}). Use device='cpu' or run on a machine with {kind}."
        )
    return detected


def _backend(method: str) -> type[Backend]:
    backend = registry.get(method)
    backend.require()
    return backend


def _check_usable(backend: type[Backend], device: str) -> None:
    reason = backend.unusable_reason(hardware_for(device))
    if reason:
        raise HardwareNotSupportedError(f"{backend.name} cannot run on {device}: {reason}.")


def _source(model: ModelLike, options: Options) -> ModelSource:
    if isinstance(model, nn.Module):
        if getattr(model.config, "quantization_config", None) or getattr(model, "_quantkit", None):
            raise UnsupportedModelError(
                "This model is already quantized. Quantize the float model, or call "
                "qk.dequantize() first to get a float copy."
            )
        return ModelSource(given=model, dtype=options.dtype, device=options.device)
    path = resolve_model_path(model)
    check_float_folder(path)
    return ModelSource(path=path, dtype=options.dtype, device=options.device)


def quantize(model: ModelLike, method: str, **options: Any) -> nn.Module:
    """Quantize a float model (a local folder, a Hub id already on disk, or a loaded model).

    Returns an ordinary transformers model; the caller's model object is never modified.
    Options common to every method: ``skip`` (module names kept in float, ``lm_head`` always),
    ``dtype``, ``device``; the rest depend on the method (see ``qk.methods()``).
    """
    backend_cls = _backend(method)
    opts = build_options(backend_cls.name, backend_cls.options_type, options)
    _check_usable(backend_cls, opts.device)
    source = _source(model, opts)
    backend = backend_cls()
    start = time.perf_counter()
    quantized = backend.quantize(source, opts)
    seconds = time.perf_counter() - start
    _refuse_float_leftovers(backend, quantized, opts)
    quantized._quantkit = {
        "method": backend_cls.name,
        "options": opts.to_json(),
        "source": str(source.path) if source.path else getattr(model, "name_or_path", None),
        "quantize_seconds": seconds,
    }
    return quantized


def _refuse_float_leftovers(backend: Backend, model: nn.Module, options: Options) -> None:
    left = [name for name, module in linear_layers(model, options.skip)
            if not backend.is_quantized_module(module)]
    if left:
        shown = ", ".join(left[:6]) + (f" and {len(left) - 6} more" if len(left) > 6 else "")
        raise UnsupportedModelError(
            f"{backend.name} left {len(left)} linear layer(s) in float: {shown}. quantkit does not "
            "return a silently half-quantized model; pass skip=[...] naming them to keep them in "
            "float on purpose, or choose another method."
        )


def backend_of(model: nn.Module) -> Backend:
    """The backend that quantized ``model`` (by quantkit, or by transformers from a config)."""
    info = getattr(model, "_quantkit", None)
    if info:
        return registry.get(info["method"])()
    config = getattr(model, "config", None)
    qc = getattr(config, "quantization_config", None)
    if qc is None:
        raise NotQuantizedError(
            "This model is not quantized, so there is nothing to dequantize or save in a quantized "
            "format. Save a float model with model.save_pretrained(); quantize with qk.quantize()."
        )
    qc = qc if isinstance(qc, dict) else qc.to_dict()
    return formats.owner_of(qc)()


def _protected_folders(model: nn.Module) -> list[Path]:
    candidates = [(getattr(model, "_quantkit", None) or {}).get("source"),
                  getattr(model, "_quantkit_source", None), getattr(model, "name_or_path", None)]
    return [Path(c) for c in candidates if c and Path(c).is_dir()]


def _is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "_quantkit", None)
                or getattr(getattr(model, "config", None), "quantization_config", None))


def save(model: nn.Module, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Save a model as an HF-style folder (safetensors + JSON), atomically.

    A quantized model is saved in its method's format (with quantkit.json beside it); a float
    model (e.g. from ``qk.dequantize``) as a plain transformers checkpoint. Refuses the model's own
    source folder, and a non-empty folder unless ``overwrite=True``.
    """
    folder = Path(folder)
    sources = _protected_folders(model)
    backend = backend_of(model) if _is_quantized(model) else None
    check_target(folder, sources, overwrite)
    info = getattr(model, "_quantkit", None) or {}

    def write(tmp: Path) -> None:
        if backend is None:
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            backend.save(model, tmp)
            write_json(tmp / formats.QUANTKIT_FILE, {
                "method": backend.name,
                "options": info.get("options", {}),
                "quantkit_version": __version__,
                "torch_version": torch.__version__,
            })
        copy_tokenizer_files(sources[0] if sources else None, tmp)

    write_atomically(folder, write)
    return folder


def load(folder: str | Path, *, device: str = "cpu", dtype: torch.dtype | str | None = None) -> nn.Module:
    """Load a quantized checkpoint; the method is read from the folder."""
    folder = Path(folder)
    config = read_config(folder)
    backend_cls = formats.backend_for_folder(folder)
    backend_cls.require()
    _check_usable(backend_cls, device)
    model = backend_cls().load(folder, config, LoadOptions(device=device, dtype=parse_dtype(dtype)))
    record = formats.quantkit_record(folder)
    model._quantkit = {"method": backend_cls.name, "options": record.get("options", {}),
                       "source": str(folder)}
    return model.eval()


def dequantize(model: ModelLike, *, dtype: torch.dtype | str | None = None) -> nn.Module:
    """A plain float copy of a quantized model (or folder): nn.Linear layers, no quantization state."""
    if not isinstance(model, nn.Module):
        model = load(model)
    plain = backend_of(model).dequantize(model, parse_dtype(dtype))
    source = (getattr(model, "_quantkit", None) or {}).get("source")
    plain._quantkit_source = source  # lets qk.save copy the tokenizer files and protect the source
    return plain


def inspect(folder: str | Path) -> formats.CheckpointInfo:
    """What format a checkpoint folder holds, which method owns it, and its size."""
    return formats.inspect(folder)
