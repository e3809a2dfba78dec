"""Shared fixtures: tiny models built locally and saved once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from quantkit.testing import save_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Folders holding a tiny float Llama and a tiny float GPT-2 (safetensors)."""
    root = tmp_path_factory.mktemp("float-models")
    return {kind: save_tiny(kind, root / kind) for kind in ("llama", "gpt2")}


@pytest.fixture(scope="session")
def llama_dir(model_dirs) -> Path:
    return model_dirs["llama"]


@pytest.fixture(scope="session")
def gpt2_dir(model_dirs) -> Path:
    return model_dirs["gpt2"]
