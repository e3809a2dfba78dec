"""Saving and loading through one backend directly (below the api), for backend tests."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from quantkit.backends.base import Backend, LoadOptions


def save_with(backend: Backend, model: nn.Module, folder: Path) -> Path:
    """``backend.save`` into a new folder; returns it."""
    folder.mkdir()
    backend.save(model, folder)
    return folder


def load_with(backend: Backend, folder: Path, **options) -> nn.Module:
    """``backend.load`` of a folder, with its config.json and LoadOptions(**options)."""
    config = json.loads((folder / "config.json").read_text())
    return backend.load(folder, config, LoadOptions(**options))
