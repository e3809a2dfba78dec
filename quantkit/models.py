"""Float models: loading them, walking their linear layers, and GPT-2's Conv1D."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from quantkit.errors import NotAModelError, QuantkitError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def conv1d_type() -> type[nn.Module]:
    """transformers' GPT-2 style ``Conv1D`` (a linear layer with a transposed weight)."""
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def read_config(folder: str | Path) -> dict:
    """The folder's config.json as a dict, or NotAModelError saying what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAModelError(
            f"{str(folder)!r} is not a folder. Pass a local Hugging Face model folder "
            "(with config.json and model.safetensors) or a loaded transformers model."
        )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise NotAModelError(
            f"{str(folder)!r} has no config.json, so it is not a Hugging Face model folder. "
            "Point at the folder that holds config.json and the *.safetensors weights."
        )
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise NotAModelError(f"{config_file} is not valid JSON ({exc}); the folder is damaged.") from exc


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A local model folder for a path or an already-downloaded Hub id (no network here)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        read_config(path)
        return path
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors",
                                                                     "*.model", "*.txt"])
    except Exception as exc:  # noqa: BLE001 - any hub failure means "not a model we can reach"
        raise NotAModelError(
            f"{str(name_or_path)!r} is neither a local model folder nor a Hub model id that could "
            f"be fetched ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Check the path, or download the model first."
        ) from exc
    read_config(local)
    return Path(local)


def check_float_folder(path: Path) -> None:
    """Raise NotAModelError unless ``path`` holds a float model in safetensors."""
    if not any((path / name).exists() for name in WEIGHT_FILES):
        raise NotAModelError(
            f"{str(path)!r} has no model.safetensors weights. quantkit loads safetensors only "
            "(never pickled .bin files); convert the model with save_pretrained(safe_serialization=True)."
        )
    if read_config(path).get("quantization_config"):
        raise NotAModelError(
            f"{str(path)!r} holds an already quantized model; quantize a float model, or use "
            "qk.load() to load this one and qk.dequantize() to get floats back."
        )


def load_float_model(path: str | Path, dtype: torch.dtype | None = None,
                     device: str = "cpu") -> nn.Module:
    """Load a plain float causal LM from a local folder, safetensors only."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(path)
    check_float_folder(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", device_map=device,
                                                 use_safetensors=True)
    return model.eval()


@dataclass
class ModelSource:
    """The float model to quantize: a folder, an in-memory model, or both.

    ``model()`` gives a private float copy (the caller's model is never changed);
    ``path`` is set when the model came from a folder on disk.
    """

    path: Path | None = None
    given: nn.Module | None = None
    dtype: torch.dtype | None = None
    device: str = "cpu"
    _loaded: nn.Module | None = field(default=None, repr=False)

    def model(self) -> nn.Module:
        if self._loaded is None:
            if self.given is not None:
                self._loaded = copy.deepcopy(self.given).eval()
                if self.dtype is not None:
                    cast_to(self._loaded, self.dtype)
                self._loaded.to(self.device)
            else:
                self._loaded = load_float_model(self.path, self.dtype, self.device)
        return self._loaded

    @property
    def config(self):
        if self.given is not None:
            return self.given.config
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.path)


def cast_to(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast float parameters and saved buffers to ``dtype``, as loading with ``dtype=`` does.

    Computed (non-persistent) buffers such as rotary ``inv_freq`` keep their dtype, so the model
    matches what ``from_pretrained(..., dtype=dtype)`` of the same weights would give.
    """
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(dtype)
        for name, buf in module.named_buffers(recurse=False):
            if buf.is_floating_point() and name not in module._non_persistent_buffers_set:
                setattr(module, name, buf.to(dtype))
    model.config.dtype = dtype


def is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    """True if module ``name`` is named by ``skip`` (exactly, or as a dotted suffix or prefix)."""
    return any(name == s or name.endswith("." + s) or name.startswith(s + ".") for s in skip)


def linear_layers(model: nn.Module, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every nn.Linear or Conv1D not named in ``skip``."""
    kinds = (nn.Linear, conv1d_type())
    for name, module in model.named_modules():
        if isinstance(module, kinds) and not is_skipped(name, skip):
            yield name, module


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def conv1d_as_linear(conv: nn.Module) -> nn.Linear:
    """The nn.Linear that computes what a Conv1D computes (weight transposed)."""
    n_in, n_out = conv.weight.shape
    linear = nn.Linear(n_in, n_out, bias=conv.bias is not None, device="meta")
    linear.weight = nn.Parameter(conv.weight.detach().t().contiguous(), requires_grad=False)
    if conv.bias is not None:
        linear.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
    return linear


def conv1d_to_linear(model: nn.Module, skip: tuple[str, ...] = ()) -> int:
    """Turn every Conv1D (GPT-2 style) into an equivalent nn.Linear; returns how many."""
    conv = conv1d_type()
    names = [n for n, m in model.named_modules() if isinstance(m, conv) and not is_skipped(n, skip)]
    for name in names:
        set_module(model, name, conv1d_as_linear(model.get_submodule(name)))
    return len(names)


def conv1d_names(config) -> set[str]:
    """Names of the modules the architecture builds as Conv1D (read off a weightless skeleton)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    conv = conv1d_type()
    return {n for n, m in skeleton.named_modules() if isinstance(m, conv)}


def restore_conv1d(model: nn.Module) -> int:
    """Turn nn.Linear back into Conv1D where the architecture expects Conv1D; returns how many."""
    names = conv1d_names(model.config)
    conv_cls = conv1d_type()
    count = 0
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            conv = conv_cls(module.out_features, module.in_features)
            conv.weight = nn.Parameter(module.weight.detach().t().contiguous(), requires_grad=False)
            if module.bias is not None:
                conv.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=False)
            else:
                conv.bias = None
            set_module(model, name, conv.to(module.weight.device))
            count += 1
    return count


def empty_model(config, dtype: torch.dtype | None = None) -> nn.Module:
    """A model of ``config``'s architecture for loading into.

    Parameters are on the meta device (fill them with ``load_state_dict(..., assign=True)``);
    buffers such as rotary ``inv_freq`` are real, because they are computed, not saved.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def finish_loading(model: nn.Module, folder: Path, weights: Path) -> nn.Module:
    """After filling an ``empty_model``: tie weights as the config says, refuse a model with
    weights still missing (a damaged ``weights`` file), and take the folder's generation config."""
    from transformers import GenerationConfig

    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise QuantkitError(f"{weights} lacks the weights of {', '.join(left[:5])}; it is damaged.")
    if (Path(folder) / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model
