"""Reading a checkpoint folder: which method wrote it, and which backend owns it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantkit import registry
from quantkit.backends.base import Backend
from quantkit.errors import NotQuantizedError, QuantkitError
from quantkit.models import read_config

QUANTKIT_FILE = "quantkit.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass
class CheckpointInfo:
    """What a folder holds: architecture, quantization method and format, files, size."""

    folder: Path
    architecture: str
    quant_method: str | None          # as written in config.json (None: a float model)
    method: str | None                # the quantkit method that owns it (None if none does)
    stock_load: bool | None           # loads with stock AutoModelForCausalLM.from_pretrained
    size_bytes: int
    files: list[str] = field(default_factory=list)
    quantization_config: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"folder:        {self.folder}",
            f"architecture:  {self.architecture}",
            f"quantized:     {'yes, ' + str(self.quant_method) if self.quant_method else 'no (float)'}",
            f"quantkit method: {self.method or '-'}",
            f"stock transformers load: {_yes_no(self.stock_load)}",
            f"size on disk:  {self.size_bytes / 2**20:.2f} MiB",
            f"files:         {', '.join(self.files)}",
        ]
        return "\n".join(lines)


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no (use qk.load)")


def folder_size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def pickle_files(folder: Path) -> list[str]:
    """Names of files in ``folder`` that would be unpickled by a careless loader."""
    return sorted(p.name for p in Path(folder).rglob("*") if p.suffix in PICKLE_SUFFIXES)


def quantkit_record(folder: Path) -> dict[str, Any]:
    """quantkit.json, which quantkit writes beside every checkpoint it saves ({} when absent)."""
    path = Path(folder) / QUANTKIT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def owner_of(quantization_config: dict[str, Any], hint: str | None = None) -> type[Backend]:
    """The backend that owns a ``quantization_config`` (``hint``: a method name to try first)."""
    methods = registry.all_methods()
    if hint and hint in methods and methods[hint].owns(quantization_config):
        return methods[hint]
    for backend in methods.values():
        if backend.owns(quantization_config):
            return backend
    quant_method = quantization_config.get("quant_method", "?")
    raise QuantkitError(
        f"No quantkit method reads checkpoints with quant_method={quant_method!r}. "
        f"Methods available here: {', '.join(methods)}. A newer quantkit, or the plug-in that "
        "registers this format, may support it."
    )


def backend_for_folder(folder: str | Path) -> type[Backend]:
    """The backend that can load a checkpoint folder; errors say why none can."""
    folder = Path(folder)
    config = read_config(folder)
    quantization_config = config.get("quantization_config")
    if not quantization_config:
        raise NotQuantizedError(
            f"{str(folder)!r} holds a float model (no quantization_config in config.json). Load it "
            "with transformers' from_pretrained, or quantize it with qk.quantize()."
        )
    return owner_of(quantization_config, quantkit_record(folder).get("method"))


def inspect(folder: str | Path) -> CheckpointInfo:
    """Describe a checkpoint folder without loading any weights."""
    folder = Path(folder)
    config = read_config(folder)
    qc = config.get("quantization_config") or {}
    backend = backend_for_folder(folder) if qc else None
    return CheckpointInfo(
        folder=folder,
        architecture=", ".join(config.get("architectures") or [config.get("model_type", "?")]),
        quant_method=qc.get("quant_method") or ("bitsandbytes" if qc else None),
        method=backend.name if backend else None,
        stock_load=backend.stock_loadable(qc) if backend else (True if not qc else None),
        size_bytes=folder_size(folder),
        files=sorted(p.name for p in folder.iterdir() if p.is_file()),
        quantization_config=qc,
    )
