"""HQQ (Half-Quadratic Quantization) through hqq's own ``HQQLinear``, saved in quantkit's format.

transformers 5.24 refuses to quantize with ``HqqConfig`` and loads HQQ checkpoints as random
weights without an error, and hqq's native save is a pickle. So quantkit drives ``HQQLinear``
directly and writes its own checkpoint: config.json plus one safetensors file whose name stock
transformers does not look for (so ``from_pretrained`` fails loudly instead of loading noise).

On disk (``WEIGHTS_FILE``): the float tensors under their usual names; for each quantized layer
``<layer>.W_q`` (packed codes), ``<layer>.scale``, ``<layer>.zero`` and ``<layer>.bias``; and in
the safetensors metadata under ``META_KEY`` a JSON object ``{"version": 1, "layers": {<layer>:
{shape, nbits, group_size, axis, packing, compute_dtype, channel_wise, optimize, round_zero}}}``.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantkit.backends.base import Backend, Capabilities, LoadOptions, float_dtype
from quantkit.errors import InvalidOptionError, NotAModelError, NotQuantizedError, QuantkitError
from quantkit.models import (
    ModelSource,
    conv1d_to_linear,
    empty_model,
    finish_loading,
    linear_layers,
    set_module,
)
from quantkit.spec import Options, check_choice

QUANT_METHOD = "quantkit-hqq"
WEIGHTS_FILE = "hqq_model.safetensors"
META_KEY = "quantkit-hqq"
FORMAT_VERSION = 1
BITS = (1, 2, 3, 4, 8)
PACKINGS = {1: "1bit_u8", 2: "2bit_u8", 3: "3bit_32", 4: "4bit_u8", 8: "8bit_u8"}
# hqq packs groups along dim 0 in blocks of this many rows (3-bit pads; the others need a multiple)
ROWS_PER_PACK = {1: 8, 2: 4, 3: 1, 4: 2, 8: 1}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class HqqOptions(Options):
    """bits: 1, 2, 3, 4 or 8.   group_size: weights sharing one scale and zero (a multiple of 8).
    axis: 1 groups along each row's input features (the default), 0 along the flattened columns.
    """

    bits: int = 4
    group_size: int = 64
    axis: int = 1

    def validate(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise InvalidOptionError(f"hqq: bits={self.bits!r} must be an int, one of {BITS}.")
        check_choice("hqq", "bits", self.bits, BITS)
        check_choice("hqq", "axis", self.axis, (0, 1))
        size = self.group_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 8:
            raise InvalidOptionError(
                f"hqq: group_size={size!r} is not supported; use a positive multiple of 8 that divides "
                "the layers' input features (64 is the usual choice, 128 saves memory, 32 is more exact)."
            )


class Hqq(Backend):
    name = "hqq"
    aliases = ("hqq-quantkit",)
    description = "HQQ: calibration-free 1/2/3/4/8-bit weights, fast to quantize; quantkit's own format"
    library = "hqq"
    requirement = "hqq>=0.2.5"
    capabilities = Capabilities(
        bits=BITS, on_the_fly=True, serializable=True, peft_trainable=True, devices=("cpu", "cuda"),
        torch_compile=True, format=QUANT_METHOD, stock_load=False,
    )
    options_type = HqqOptions

    # -- quantize -------------------------------------------------------------------------------
    def quantize(self, source: ModelSource, options: HqqOptions) -> nn.Module:
        self.require()
        from hqq.core.quantize import HQQLinear
        from tqdm.auto import tqdm

        model = source.model()
        if options.dtype is not None:
            model.to(options.dtype)  # a no-op when the api built the source with this dtype
        compute_dtype = options.dtype or float_dtype(model)
        conv1d_to_linear(model, options.skip)
        layers = list(linear_layers(model, options.skip))
        check_group_size(layers, options)
        config = quant_config(options.bits, options.group_size, options.axis)
        with torch.no_grad():  # else hqq's bias copy keeps an autograd graph and cannot be deep-copied
            for name, linear in tqdm(layers, desc=f"hqq {options.bits}-bit", unit="layer", leave=False):
                layer = HQQLinear(linear, config, del_orig=True, compute_dtype=compute_dtype,
                                  device=options.device)
                set_module(model, name, layer)
        model.config.quantization_config = {
            "quant_method": QUANT_METHOD, "bits": options.bits, "group_size": options.group_size,
            "axis": options.axis, "skip": list(options.skip), "weights_file": WEIGHTS_FILE,
            "format_version": FORMAT_VERSION,
        }
        return model

    # -- layers ---------------------------------------------------------------------------------
    def is_quantized_module(self, module: nn.Module) -> bool:
        hqq = sys.modules.get("hqq.core.quantize")  # no HQQLinear can exist before hqq is imported
        return hqq is not None and isinstance(module, hqq.HQQLinear)

    def dequantize_module(self, module: nn.Module, dtype: torch.dtype) -> nn.Linear:
        with torch.no_grad():
            weight = module.dequantize().to(dtype)
            out_features, in_features = weight.shape
            linear = nn.Linear(in_features, out_features, bias=module.bias is not None, device="meta")
            linear.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
            if module.bias is not None:
                linear.bias = nn.Parameter(module.bias.detach().to(dtype).clone(), requires_grad=False)
        return linear

    # -- save / load ----------------------------------------------------------------------------
    def save(self, model: nn.Module, folder: Path) -> None:
        from safetensors.torch import save_file

        layers = {n: m for n, m in model.named_modules() if self.is_quantized_module(m)}
        if not layers:
            raise NotQuantizedError("hqq: this model has no HQQ layers, so there is nothing to save.")
        tensors, computed = float_tensors(model, set(layers))
        dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), None) or float_dtype(model)
        metas = {}
        for name, layer in layers.items():
            layer_tensors, metas[name] = flatten_layer(name, layer)
            tensors.update(layer_tensors)
        metadata = {"format": "pt", META_KEY: json.dumps({"version": FORMAT_VERSION, "layers": metas,
                                                                "buffers": computed})}
        save_file(tensors, folder / WEIGHTS_FILE, metadata=metadata)

        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]
        config.dtype = dtype  # what the float parts hold (a config can lag behind a model.to(dtype))
        qc = getattr(config, "quantization_config", None) or {}
        config.quantization_config = {**qc, "quant_method": QUANT_METHOD, "weights_file": WEIGHTS_FILE,
                                      "format_version": FORMAT_VERSION}
        config.to_json_file(folder / "config.json")
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(folder)

    def load(self, folder: Path, config: dict[str, Any], options: LoadOptions) -> nn.Module:
        self.require()
        from safetensors import safe_open
        from safetensors.torch import load_file
        from transformers import AutoConfig

        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise NotAModelError(f"{str(folder)!r} has no {WEIGHTS_FILE}; this HQQ checkpoint is incomplete.")
        with safe_open(path, framework="pt") as f:
            header = json.loads((f.metadata() or {}).get(META_KEY) or "null")
        tensors = load_file(path, device=options.device)
        if not header or header.get("version") != FORMAT_VERSION:
            raise QuantkitError(f"{path} has no quantkit-hqq version {FORMAT_VERSION} layer table; "
                                "it was not written by this quantkit (or is damaged).")

        hf_config = AutoConfig.from_pretrained(folder)
        model = empty_model(hf_config, options.dtype)
        layer_tensors = {name: {k: tensors.pop(f"{name}.{k}", None) for k in ("W_q", "scale", "zero", "bias")}
                         for name in header["layers"]}
        computed = {key: tensors.pop(key) for key in header.get("buffers", [])}
        if options.dtype is not None:
            tensors = {k: v.to(options.dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        unexpected = model.load_state_dict(tensors, strict=False, assign=True).unexpected_keys
        if unexpected:
            raise QuantkitError(f"{path} holds tensors this architecture does not have: {unexpected[:5]}")
        for key, value in computed.items():
            module_name, _, leaf = key.rpartition(".")
            module = model.get_submodule(module_name)
            if leaf in module._buffers:
                module._buffers[leaf] = value
        for name, meta in header["layers"].items():
            set_module(model, name, build_layer(name, meta, layer_tensors[name], options))
        return finish_loading(model, folder, path).to(options.device).eval()

    @classmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        return quantization_config.get("quant_method") == QUANT_METHOD


METHODS = [Hqq]


def quant_config(bits: int, group_size: int, axis: int, optimize: bool = True,
                 round_zero: bool | None = None) -> dict[str, Any]:
    """hqq's quant_config dict (what ``BaseQuantizeConfig`` builds), without quantized meta."""
    return {
        "weight_quant_params": {
            "nbits": bits, "channel_wise": True, "group_size": group_size, "optimize": optimize,
            "round_zero": bits == 4 if round_zero is None else round_zero, "axis": axis,
            "view_as_float": False,
        },
        "scale_quant_params": None, "zero_quant_params": None, "offload_meta": False,
    }


def check_group_size(layers: list[tuple[str, nn.Module]], options: HqqOptions) -> None:
    """Raise InvalidOptionError, naming the layer and a group_size that fits, for a layer hqq
    would group across rows (axis 1) or could not bit-pack (hqq itself asserts or truncates)."""
    for name, layer in layers:
        problem = group_problem(tuple(layer.weight.shape), options.group_size, options.bits, options.axis)
        if problem is None:
            continue
        smaller = range(options.group_size - 8, 7, -8)
        fits = (s for s in smaller if all(group_problem(tuple(m.weight.shape), s, options.bits, options.axis)
                                          is None for _, m in layers))
        size = next(fits, None)
        hint = f"group_size={size} (fits every layer) " if size else ""
        raise InvalidOptionError(
            f"hqq: layer {name!r} {problem}. Use {hint}or keep the layer in float with skip=[{name!r}]."
        )


def group_problem(shape: tuple[int, int], size: int, bits: int, axis: int) -> str | None:
    """Why a weight of ``shape`` [out, in] cannot take ``size``-wide groups (None if it can)."""
    n_out, n_in = shape
    if axis == 1 and n_in % size:
        return f"has {n_in} input features, not a multiple of group_size={size}"
    if axis == 0 and (n_in * n_out) % size:
        return f"has {n_in * n_out} weights, not a multiple of group_size={size}"
    if axis == 1 and (n_out * n_in // size) % ROWS_PER_PACK[bits]:
        return (f"splits into {n_out * n_in // size} groups of {size}, but {bits}-bit packing needs a "
                f"multiple of {ROWS_PER_PACK[bits]} groups")
    return None


def float_tensors(model: nn.Module, quantized: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors outside the quantized layers, each shared (tied) tensor once, and the names of
    those that are non-persistent buffers (rotary ``inv_freq``): saved too, as the model holds
    them, because a model cast with ``.to(dtype)`` computes with a rounded copy."""
    out: dict[str, torch.Tensor] = {}
    computed: list[str] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if module_name in quantized or any(module_name.startswith(q + ".") for q in quantized):
            continue
        prefix = module_name + "." if module_name else ""
        for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            out[prefix + name] = tensor.detach().contiguous()
            if name in module._non_persistent_buffers_set and name not in module._parameters:
                computed.append(prefix + name)
    return out, computed


def flatten_layer(name: str, layer: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One HQQLinear as tensors (``<name>.W_q``, ``.scale``, ``.zero``, ``.bias``) and a JSON-able meta."""
    meta = layer.meta
    if meta.get("quant_scale") or meta.get("quant_zero") or layer.offload_meta or meta.get("view_as_float"):
        raise QuantkitError(f"hqq: layer {name!r} uses quantized or offloaded meta-data (deprecated in hqq); "
                            "quantkit saves plain-scale HQQ layers only. Re-quantize with qk.quantize().")
    tensors = {f"{name}.W_q": layer.W_q.detach().contiguous(),
               f"{name}.scale": meta["scale"].contiguous(), f"{name}.zero": meta["zero"].contiguous()}
    if layer.bias is not None:
        tensors[f"{name}.bias"] = layer.bias.detach().contiguous()
    params = layer.quant_config["weight_quant_params"]
    info = {
        "shape": list(meta["shape"]), "nbits": meta["nbits"], "group_size": meta["group_size"],
        "axis": meta["axis"], "packing": meta["packing"],
        "compute_dtype": str(layer.compute_dtype).removeprefix("torch."),
        **{k: params[k] for k in ("channel_wise", "optimize", "round_zero")},
    }
    return tensors, info


def build_layer(name: str, info: dict[str, Any], tensors: dict[str, torch.Tensor | None],
                options: LoadOptions) -> nn.Module:
    """An HQQLinear rebuilt from its saved tensors and meta, through hqq's non-pickle state path."""
    from hqq.core.quantize import HQQLinear, Quantizer

    bits, packing = info["nbits"], info["packing"]
    if bits not in BITS or packing != PACKINGS[bits] or info["compute_dtype"] not in DTYPES:
        raise QuantkitError(f"hqq: layer {name!r} has an unsupported saved format: {info}")
    if tensors["W_q"] is None or tensors["scale"] is None or tensors["zero"] is None:
        raise QuantkitError(f"hqq: the checkpoint lacks the packed weights of layer {name!r}")
    compute_dtype = options.dtype or DTYPES[info["compute_dtype"]]
    config = quant_config(bits, info["group_size"], info["axis"], info["optimize"], info["round_zero"])
    config["weight_quant_params"]["channel_wise"] = info["channel_wise"]
    layer = HQQLinear(None, config, compute_dtype=compute_dtype, device=options.device, initialize=False)
    # a state dict without "encoded_state_dict" is taken as is: no decoding (hqq's decoder evals strings)
    layer.load_state_dict({
        "W_q": tensors["W_q"], "bias": tensors["bias"], "offload_meta": False,
        "nbits": bits, "group_size": info["group_size"], "shape": torch.Size(info["shape"]),
        "scale": tensors["scale"], "zero": tensors["zero"], "axis": info["axis"], "packing": packing,
        "unpack_view_dtype": Quantizer.unpack_view_dtype[packing], "view_as_float": False,
        "quant_scale": False, "quant_zero": False, "compute_dtype": compute_dtype,
    })
    return layer
