"""How big a model is: weight bytes on disk, bits per quantized weight, tensor bytes in memory."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn


def safetensors_entries(folder: Path) -> Iterator[tuple[str, int]]:
    """(tensor name, bytes) for every tensor in the folder's *.safetensors files (headers only)."""
    for file in sorted(Path(folder).glob("*.safetensors")):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                yield name, end - start


def weight_file_bytes(folder: Path) -> int:
    """Bytes of the folder's *.safetensors files (the checkpoint without tokenizer or JSON)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def bits_per_weight(folder: Path, layers: dict[str, int]) -> float | None:
    """Stored bits per weight of the quantized layers: every tensor saved under a layer's name
    (packed weights, scales, zero points, indices; not the bias) over the layers' weight count.

    ``layers`` maps each quantized layer's module name to its number of weights.
    """
    if not layers:
        return None
    stored = 0
    for name, size in safetensors_entries(folder):
        owner = _owner(name, layers)
        if owner and name != f"{owner}.bias":
            stored += size
    return 8 * stored / sum(layers.values())


def _owner(tensor_name: str, layers: dict[str, int]) -> str | None:
    parts = tensor_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in layers:
            return prefix
    return None


def _tensors(value, depth: int = 0) -> Iterable[torch.Tensor]:
    """Tensors held by a module attribute: a tensor (a subclass's inner tensors), a dict or list of
    them, or an object holding some (bitsandbytes' QuantState, HQQ's meta dict), two levels deep."""
    if isinstance(value, torch.Tensor):
        flatten = getattr(type(value), "__tensor_flatten__", None)
        if flatten is not None and type(value) not in (torch.Tensor, nn.Parameter):
            names, _ = value.__tensor_flatten__()
            for name in names:
                yield from _tensors(getattr(value, name), depth)
        else:
            yield value
        holder = getattr(value, "quant_state", None)
        if holder is not None and depth < 2:
            yield from _tensors(holder, depth + 1)
    elif depth >= 2 or isinstance(value, (str, bytes, int, float, nn.Module)):
        return
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif hasattr(value, "__dict__") and not callable(value):
        for item in vars(value).values():
            yield from _tensors(item, depth + 1)


def memory_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model holds, counted once: parameters, buffers, and quantization
    state kept in module attributes (scales in dicts, bitsandbytes' quant_state, tensor subclasses)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for module in model.modules():
        values = list(module._parameters.values()) + list(module._buffers.values())
        values += [v for k, v in vars(module).items() if not k.startswith("_")]
        for value in values:
            for tensor in _tensors(value):
                if tensor.device.type == "meta":
                    continue
                key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
                if key not in seen:
                    seen.add(key)
                    total += key[1]
    return total
