"""compressed-tensors: the checkpoint format llm-compressor writes and vLLM serves.

Schemes are compressed-tensors' own presets (``W4A16``, ``W8A16``, ``W8A8``, ``FP8_DYNAMIC``,
``NVFP4A16``, ``MXFP4A16``), applied with ``apply_quantization_config``. compressed-tensors 0.20
computes no scales (its observers moved to llm-compressor), so quantkit takes each weight's min and
max per the scheme's strategy (channel, group, or group plus one global scale for NVFP4) and turns
them into scales with compressed-tensors' ``calculate_qparams`` / ``generate_gparam``: data-free,
round-to-nearest, like llm-compressor's memoryless min-max observer.

In memory a quantized layer is what stock transformers gives after loading such a checkpoint and
running it once: an ``nn.Linear`` whose weight holds the decompressed values (each layer is
compressed and decompressed with the scheme's own compressor), with the scales kept beside it and
activations quantized on the fly for W8A8 / FP8. A save therefore reloads bit-identically. ``save``
compresses a float32 copy of those values and checks it decompresses to them exactly, never touching
the model: forward passes before a save do no harm (upstream decompresses in place on the first
forward, and compressing bf16 weights again moves some 8-bit values by one step).

Loading goes through stock ``from_pretrained`` and then decompresses each layer as the first forward
pass would; folders stock transformers cannot read (quantkit's GPT-2 ones, asymmetric packed int
weights) are decompressed layer by layer with compressed-tensors' own compressors.

On disk: safetensors as compressed-tensors writes them (``weight_packed`` int32 for int4,
int8 / float8_e4m3fn ``weight`` for W8A8 / FP8, uint8 ``weight_packed`` with fp8 group scales and a
global scale for NVFP4) and ``quantization_config`` with ``quant_method: compressed-tensors``.
GPT-2's Conv1D layers are quantized as nn.Linear; such folders carry a flag inside each scheme's
``weights`` that compressed-tensors' pydantic validation (which transformers and vLLM both use)
rejects, so stock loaders refuse them instead of loading transposed weights; ``qk.load`` reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from quantkit.backends.base import Backend, Capabilities, LoadOptions, float_dtype
from quantkit.errors import InvalidOptionError, NotQuantizedError, QuantkitError, UnsupportedModelError
from quantkit.models import ModelSource, conv1d_to_linear, empty_model, finish_loading, linear_layers
from quantkit.spec import Options, check_choice

QUANT_METHOD = "compressed-tensors"
CONV1D_FLAG = "quantkit_conv1d_saved_as_linear"
FP4_FORMATS = ("nvfp4-pack-quantized", "mxfp4-pack-quantized")
GROUP_SIZES = (32, 64, 128)


@dataclass
class IntWeightOptions(Options):
    """group_size: weights sharing one scale along the input features (32, 64 or 128).
    symmetric: False adds a zero point per group (compressed-tensors' ``W4A16_ASYM`` style)."""

    group_size: int = 128
    symmetric: bool = True

    def validate(self) -> None:
        check_choice("compressed-tensors", "group_size", self.group_size, GROUP_SIZES)
        if not isinstance(self.symmetric, bool):
            raise InvalidOptionError(f"compressed-tensors: symmetric={self.symmetric!r} must be True or "
                                     "False.")


class CompressedTensorsBackend(Backend):
    """What every ct-* method shares: scales, compression, the compressed-tensors checkpoint."""

    library = "compressed_tensors"
    requirement = "compressed-tensors>=0.20"
    preset: ClassVar[str]  # compressed-tensors preset scheme name

    def scheme(self, options: Options) -> Any:
        """The compressed-tensors QuantizationScheme for ``options``, targeting every nn.Linear."""
        from compressed_tensors.quantization import preset_name_to_scheme

        return preset_name_to_scheme(self.preset, ["Linear"])

    # -- quantize -----------------------------------------------------------------------------
    def quantize(self, source: ModelSource, options: Options) -> nn.Module:
        self.require()
        from compressed_tensors.compressors.base import compress_module, decompress_module
        from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
        from tqdm.auto import tqdm

        model = source.model()
        converted = conv1d_to_linear(model, options.skip)
        names = [name for name, _ in linear_layers(model, options.skip)]
        scheme = self.scheme(options)
        check_shapes(model, names, scheme.weights, self.name)
        kept = [name for name, module in linear_layers(model) if name not in names]
        config = QuantizationConfig(config_groups={"group_0": scheme}, ignore=kept)
        apply_quantization_config(model, config, show_progress=False)
        dtype = float_dtype(model)
        with torch.no_grad():
            for name in tqdm(names, desc=self.name, unit="layer", leave=False):
                module = model.get_submodule(name)
                if getattr(module, "quantization_scheme", None) is None:
                    continue  # not an nn.Linear by class name; the api reports it as left in float
                set_weight_qparams(module)
                compress_module(module)
                decompress_module(module)  # what loading the saved checkpoint gives, value for value
                module.weight.data = module.weight.data.to(dtype)
        model.config.quantization_config = quantization_config(model, "decompressed", bool(converted))
        return model

    # -- layers ---------------------------------------------------------------------------------
    def is_quantized_module(self, module: nn.Module) -> bool:
        scheme = getattr(module, "quantization_scheme", None)
        return isinstance(module, nn.Linear) and getattr(scheme, "weights", None) is not None

    def dequantize_module(self, module: nn.Module, dtype: torch.dtype) -> nn.Linear:
        weight = dequantized_weight(module)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.detach().to(dtype).clone(), requires_grad=False)
        if module.bias is not None:
            linear.bias = nn.Parameter(module.bias.detach().to(dtype).clone(), requires_grad=False)
        return linear

    # -- save / load ----------------------------------------------------------------------------
    def save(self, model: nn.Module, folder: Path) -> None:
        layers = {n: m for n, m in model.named_modules() if n and self.is_quantized_module(m)}
        if not layers:
            raise NotQuantizedError(f"{self.name}: this model has no compressed-tensors layers to save.")
        state = {k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] not in layers}
        for name, module in layers.items():
            state.update({f"{name}.{k}": v.contiguous() for k, v in compressed_state(name, module).items()})
        quantizer = getattr(model, "hf_quantizer", None)  # a loaded model's; save_pretrained would
        if quantizer is not None:                          # write its state dict instead of ours
            model.hf_quantizer = None
        try:
            model.save_pretrained(folder, state_dict=state, safe_serialization=True)
        finally:
            if quantizer is not None:
                model.hf_quantizer = quantizer
        qc = model.config.quantization_config
        conv1d = _conv1d(qc if isinstance(qc, dict) else qc.to_dict())
        config_file = folder / "config.json"
        data = json.loads(config_file.read_text(encoding="utf-8"))
        data["quantization_config"] = quantization_config(model, "compressed", conv1d)
        config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def load(self, folder: Path, config: dict[str, Any], options: LoadOptions) -> nn.Module:
        self.require()
        qc = config["quantization_config"]
        if _sparse_format(qc):
            raise UnsupportedModelError(
                f"{str(folder)!r} holds a sparse compressed-tensors checkpoint (format "
                f"{_sparse_format(qc)!r}); compressed-tensors 0.20 dropped the sparse formats. Load it "
                "with compressed-tensors<=0.14 and the transformers of that time."
            )
        conv1d = _conv1d(qc)
        if conv1d or _packed_zero_points(qc):
            model = load_with_compressed_tensors(folder, config, options, conv1d)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(folder, dtype=options.dtype or "auto",
                                                         device_map=options.device, use_safetensors=True)
            decompress_loaded(model)
        model.config.quantization_config = quantization_config(model, "decompressed", conv1d)
        return model.eval()

    @classmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        return (quantization_config.get("quant_method") == QUANT_METHOD
                and closest_method(quantization_config) == cls.name)

    @classmethod
    def stock_loadable(cls, quantization_config: dict[str, Any]) -> bool:
        """Stock ``from_pretrained`` refuses quantkit's GPT-2 folders, sparse formats and packed
        asymmetric int weights; on CPU it loads fp4 ones but cannot run them unless the model is
        bfloat16 (said no here)."""
        qc = quantization_config
        formats = {qc.get("format"), *(g.get("format") for g in _groups(qc))}
        return (cls.capabilities.stock_load and not _conv1d(qc) and not _packed_zero_points(qc)
                and not _sparse_format(qc) and not formats & set(FP4_FORMATS))


class CtW4A16(CompressedTensorsBackend):
    name = "ct-w4a16"
    description = ("compressed-tensors W4A16: int4 weights in groups (128 default), float activations; "
                   "pack-quantized. vLLM serves it with Marlin-style kernels.")
    capabilities = Capabilities(bits=(4,), on_the_fly=False, peft_trainable=True, format=QUANT_METHOD,
                                min_cuda_capability=(7, 5))
    options_type = IntWeightOptions
    preset = "W4A16"

    def scheme(self, options: IntWeightOptions) -> Any:
        scheme = super().scheme(options)
        scheme.weights.group_size = options.group_size
        scheme.weights.symmetric = options.symmetric
        return scheme


class CtW8A16(CtW4A16):
    name = "ct-w8a16"
    description = "compressed-tensors W8A16: int8 weights in groups (128 default), float activations."
    capabilities = Capabilities(bits=(8,), on_the_fly=False, peft_trainable=True, format=QUANT_METHOD,
                                min_cuda_capability=(7, 5))
    preset = "W8A16"


class CtW8A8(CompressedTensorsBackend):
    name = "ct-w8a8"
    description = ("compressed-tensors W8A8 (INT8): int8 weights per channel, int8 activations per token "
                   "quantized at run time; int-quantized.")
    capabilities = Capabilities(bits=(8,), on_the_fly=False, format=QUANT_METHOD,
                                min_cuda_capability=(7, 5), activations="int8")
    preset = "W8A8"


class CtFp8(CompressedTensorsBackend):
    name = "ct-fp8"
    aliases = ("ct-fp8-dynamic",)
    description = ("compressed-tensors FP8_DYNAMIC: float8 e4m3 weights per channel, fp8 activations per "
                   "token at run time; float-quantized. vLLM's fp8 kernels need CUDA 8.9 (Ada, Hopper).")
    capabilities = Capabilities(bits=(8,), on_the_fly=False, format=QUANT_METHOD,
                                min_cuda_capability=(8, 9), activations="fp8")
    preset = "FP8_DYNAMIC"


class CtNvfp4(CompressedTensorsBackend):
    name = "ct-nvfp4"
    aliases = ("ct-nvfp4a16",)
    description = ("compressed-tensors NVFP4A16: fp4 e2m1 weights in groups of 16 with fp8 group scales and "
                   "one global scale; float activations. Native FP4 kernels on Blackwell (10.0); vLLM "
                   "runs it weight-only through Marlin from 8.0.")
    capabilities = Capabilities(bits=(4,), on_the_fly=False, peft_trainable=True, format=QUANT_METHOD,
                                min_cuda_capability=(8, 0), stock_load=False)
    preset = "NVFP4A16"


class CtMxfp4(CompressedTensorsBackend):
    name = "ct-mxfp4"
    aliases = ("ct-mxfp4a16",)
    description = ("compressed-tensors MXFP4A16: fp4 e2m1 weights in groups of 32 with power-of-two (e8m0) "
                   "scales; float activations. The scheme guide lists Blackwell (10.0).")
    capabilities = Capabilities(bits=(4,), on_the_fly=False, peft_trainable=True, format=QUANT_METHOD,
                                min_cuda_capability=(10, 0), stock_load=False)
    preset = "MXFP4A16"


METHODS = [CtW4A16, CtW8A16, CtW8A8, CtFp8, CtNvfp4, CtMxfp4]


# -- scales -----------------------------------------------------------------------------------------
def check_shapes(model: nn.Module, names: list[str], args: Any, method: str) -> None:
    """Raise UnsupportedModelError for layers whose input features a group does not divide."""
    size = args.group_size if args.strategy in ("group", "tensor_group") else None
    if not size:
        return
    bad = [f"{n} {tuple(model.get_submodule(n).weight.shape)}" for n in names
           if model.get_submodule(n).weight.shape[1] % size]
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise UnsupportedModelError(
            f"{method} needs in_features divisible by its group size {size}; these layers are not: "
            f"{shown}. Use a smaller group_size where the method takes one, or keep them in float "
            "with skip=[...]."
        )


def set_weight_qparams(module: nn.Module) -> None:
    """Min-max (absmax when symmetric) scales, zero points and the NVFP4 global scale of
    ``module``'s weight, per its scheme's strategy, computed in float32."""
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

    args = module.quantization_scheme.weights
    weight = module.weight.detach().float()
    global_scale = None
    if args.strategy == "tensor_group":
        global_scale = generate_gparam(weight.amin(), weight.amax())
        module.weight_global_scale.data = global_scale.to(module.weight_global_scale.dtype)
    if args.strategy == "channel":
        low, high = weight.amin(1, keepdim=True), weight.amax(1, keepdim=True)
    elif args.strategy in ("group", "tensor_group"):
        groups = weight.unflatten(-1, (-1, args.group_size))
        low, high = groups.amin(-1), groups.amax(-1)
    else:
        raise UnsupportedModelError(f"weight strategy {args.strategy!r} is not computed by quantkit")
    scale, zero_point = calculate_qparams(low, high, args, global_scale=global_scale)
    module.weight_scale.data = scale.to(module.weight_scale.dtype)
    if hasattr(module, "weight_zero_point"):
        module.weight_zero_point.data = zero_point.to(module.weight_zero_point.dtype)


# -- compression --------------------------------------------------------------------------------
def _compressor(module: nn.Module) -> Any:
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.compressors.format import infer_module_format

    scheme = module.quantization_scheme
    fmt = scheme.format or infer_module_format(type(module), scheme)
    return BaseCompressor.get_value_from_registry(getattr(fmt, "value", fmt))


def _status(module: nn.Module) -> str:
    status = getattr(module, "quantization_status", None)
    return getattr(status, "value", status) or "initialized"


def compressed_state(name: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors compressed-tensors stores for ``module``; the model is left as it is.

    A decompressed layer is compressed again from its values and scales, and must decompress to
    exactly its current weight (else it was changed after quantizing and the save would differ).
    """
    state = {k: v.detach() for k, v in module.named_parameters(recurse=False)}
    state.update({k: v for k, v in module.named_buffers(recurse=False)})
    if _status(module) == "compressed":
        return state
    # Divide in float32: in bf16, round(bf16(q * s) / s) misses q by one for |q| near 127.
    narrow = {k: v.dtype for k, v in state.items() if v.dtype in (torch.bfloat16, torch.float16)}
    wide = {k: v.float() if k in ("weight", "weight_scale") and k in narrow else v for k, v in state.items()}
    compressor = _compressor(module)
    packed = compressor.compress(wide, module.quantization_scheme)
    packed = {k: v.to(narrow[k]) if k in narrow and v.dtype == torch.float32 else v
              for k, v in packed.items()}
    if _status(module) == "decompressed":
        back = compressor.decompress(packed, module.quantization_scheme)["weight"]
        if not torch.equal(back.to(module.weight.dtype), module.weight):
            raise QuantkitError(
                f"layer {name!r}: its weight no longer matches its quantized values (was it changed "
                "after quantizing?), so saving would write a different model. Quantize the float "
                "model again with qk.quantize()."
            )
    return packed


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """``module``'s weight as floats [out, in], whatever state the layer is in."""
    status = _status(module)
    if status == "decompressed":
        return module.weight.detach()
    if status == "compressed":
        state = dict(module.named_parameters(recurse=False))
        return _compressor(module).decompress(state, module.quantization_scheme)["weight"]
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize

    return forward_quantize(module, module.weight.detach(), "weight", module.quantization_scheme.weights)


def decompress_loaded(model: nn.Module) -> None:
    """Decompress a model stock transformers loaded compressed, as its first forward pass would,
    without the hook (and without moving the model to compressed-tensors' offloading)."""
    from compressed_tensors.compressors.base import decompress_module

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "compressor"):
        quantizer.compressor.remove_decompression_hook(model)
    dtype = float_dtype(model)
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "quantization_scheme", None) is None:
                continue
            if _status(module) == "compressed":
                decompress_module(module)
            if isinstance(module, nn.Linear) and module.weight.is_floating_point():
                module.weight.data = module.weight.data.to(dtype)  # fp4 formats decompress to bf16


def load_with_compressed_tensors(folder: Path, config: dict[str, Any], options: LoadOptions,
                                 conv1d: bool) -> nn.Module:
    """Load a folder with compressed-tensors' own decompression, layer by layer: quantkit's GPT-2
    folders (``conv1d``: Conv1D saved as nn.Linear) and those stock transformers cannot read."""
    from compressed_tensors.compressors.base import decompress_module
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import AutoConfig

    qc = json.loads(json.dumps(config["quantization_config"]))
    for group in _groups(qc):
        group["weights"].pop(CONV1D_FLAG, None)
    hf_config = AutoConfig.from_pretrained(folder)
    del hf_config.quantization_config
    model = empty_model(hf_config, options.dtype)
    tensors = read_safetensors(folder)
    if conv1d:  # the quantized ones were saved as nn.Linear; those kept in float are still Conv1D
        kept = tuple(n for n, _ in linear_layers(model) if f"{n}.weight_scale" not in tensors)
        conv1d_to_linear(model, kept)
    apply_quantization_config(model, QuantizationConfig.model_validate(qc), show_progress=False)
    dtype = float_dtype(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if getattr(module, "quantization_scheme", None) is None:
                continue
            prefix = name + "."
            state = {k[len(prefix):]: tensors.pop(k) for k in list(tensors) if k.startswith(prefix)}
            for key in [k for k, _ in module.named_parameters(recurse=False)]:
                delattr(module, key)
            for key, value in state.items():
                module.register_parameter(key, nn.Parameter(value, requires_grad=False))
            decompress_module(module)
            module.weight.data = module.weight.data.to(dtype)
    if options.dtype is not None:
        tensors = {k: v.to(options.dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    unexpected = model.load_state_dict(tensors, strict=False, assign=True).unexpected_keys
    if unexpected:
        raise QuantkitError(f"{folder} holds tensors this architecture does not have: {unexpected[:5]}")
    return finish_loading(model, folder, folder).to(options.device)


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's ``model.safetensors`` (or its shards)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
             if index.is_file() else ["model.safetensors"])
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(folder / name))
    return tensors


# -- config -------------------------------------------------------------------------------------
def quantization_config(model: nn.Module, status: str, conv1d: bool) -> dict[str, Any]:
    """The ``quantization_config`` compressed-tensors' ModelCompressor writes for ``model``, with
    ``status`` ("compressed" on disk, "decompressed" in memory: a plain ``save_pretrained`` of the
    in-memory model then writes a dense checkpoint that still loads correctly)."""
    import compressed_tensors
    from compressed_tensors.compressors.format import infer_model_format
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus

    config = QuantizationConfig.from_pretrained(model, format=infer_model_format(model))
    config.quantization_status = QuantizationStatus(status)
    data = config.model_dump(mode="json", exclude={"quant_method"})
    transform = getattr(model, "transform_config", None)  # where ModelCompressor looks for it
    qc = {"version": compressed_tensors.__version__, "quant_method": QUANT_METHOD, "sparsity_config": {},
          "transform_config": transform.model_dump(mode="json") if transform is not None else {}, **data}
    if conv1d:
        for group in _groups(qc):
            group["weights"][CONV1D_FLAG] = True
    return qc


def _conv1d(quantization_config: dict[str, Any]) -> bool:
    """True for quantkit's folders of Conv1D layers saved as nn.Linear (GPT-2)."""
    return any(CONV1D_FLAG in g["weights"] for g in _groups(quantization_config))


def _sparse_format(quantization_config: dict[str, Any]) -> str | None:
    """The compressed sparse format of a checkpoint (None when dense or not sparse)."""
    fmt = (quantization_config.get("sparsity_config") or {}).get("format")
    return None if fmt in (None, "dense") else fmt


def _packed_zero_points(quantization_config: dict[str, Any]) -> bool:
    """True for asymmetric pack-quantized weights: transformers 5.24 sizes their packed zero points
    as unpacked when it prepares the model, and refuses the checkpoint."""
    top = quantization_config.get("format")
    return any(g["weights"].get("symmetric") is False and (g.get("format") or top) == "pack-quantized"
               for g in _groups(quantization_config))


def _groups(quantization_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config groups written out as schemes (not preset-name lists)."""
    groups = quantization_config.get("config_groups") or {}
    return [g for g in groups.values() if isinstance(g, dict) and isinstance(g.get("weights"), dict)]


def closest_method(quantization_config: dict[str, Any]) -> str:
    """The ct-* method whose scheme is nearest a config's (so every ct checkpoint has an owner)."""
    groups = quantization_config.get("config_groups") or {}
    for key, group in groups.items():
        if isinstance(group, list):  # a preset name mapped to its targets
            name = key.upper()
            for prefix, method in (("NVFP4", "ct-nvfp4"), ("MXFP", "ct-mxfp4"), ("FP8", "ct-fp8"),
                                   ("W8A8", "ct-w8a8"), ("INT8", "ct-w8a8"), ("W8A16", "ct-w8a16")):
                if name.startswith(prefix):
                    return method
            return "ct-w4a16"
        weights, inputs = group.get("weights"), group.get("input_activations")
        if not isinstance(weights, dict):
            continue
        bits = weights.get("num_bits", 8)
        if weights.get("type") == "float":
            if bits <= 4:
                return "ct-nvfp4" if weights.get("group_size") == 16 else "ct-mxfp4"
            return "ct-fp8"
        if inputs:
            return "ct-w8a8"
        return "ct-w4a16" if bits <= 4 else "ct-w8a16"
    return "ct-fp8"  # no weight scheme (e.g. an fp8 kv cache only)
