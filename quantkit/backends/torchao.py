"""torchao: int8 weight-only, int8 dynamic activation, int4 weight-only and float8 weight-only.

Layers are quantized in place with ``torchao.quantization.quantize_``: each nn.Linear keeps its
class and gets a torchao tensor subclass as its weight. GPT-2's Conv1D layers are turned into
nn.Linear first (torchao, and transformers' TorchAoConfig, quantize nothing else).

On disk: ``model.safetensors`` in torchao's flattened form (``<module>._weight_qdata`` ... plus a
JSON description of each tensor in the safetensors metadata) and a ``quantization_config`` that
transformers' ``TorchAoConfig`` reads, so stock transformers loads Llama-style folders. Two cases
are quantkit's own, and stock transformers refuses them loudly instead of loading wrong weights:

* models whose Conv1D layers were saved as nn.Linear (GPT-2): the torchao config in
  ``quantization_config`` carries a ``quantkit_conv1d_saved_as_linear`` field that torchao
  rejects when transformers parses it;
* int4 on CPU: torchao's CPU int4 tensor (``Int4OpaqueTensor``) stores its weights packed for
  the CPU's instruction set (AVX512 and AVX2 packings differ) and torchao cannot serialize it, so
  quantkit saves the plain 4-bit values with torchao's scales and repacks them when loading.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from quantkit.backends.base import Backend, Capabilities, LoadOptions
from quantkit.errors import (
    HardwareNotSupportedError,
    InvalidOptionError,
    NotAModelError,
    UnsupportedModelError,
)
from quantkit.models import (
    ModelSource,
    conv1d_as_linear,
    conv1d_to_linear,
    conv1d_type,
    empty_model,
    linear_layers,
    set_module,
)
from quantkit.spec import Options, check_choice

WEIGHTS_FILE = "model.safetensors"
CONV1D_FLAG = "quantkit_conv1d_saved_as_linear"
INT4_CPU_TYPE = "QuantkitInt4CpuPlain"  # on-disk form of torchao's Int4OpaqueTensor
INT4_CPU_GROUP_SIZES = (32, 64, 128)
_IDENTITY_ROWS = 512


class TorchAoBackend(Backend):
    """What the four torchao methods share: quantize_, torchao's safetensors form, loading."""

    library = "torchao"
    requirement = "torchao>=0.18"
    config_types: ClassVar[tuple[str, ...]]  # torchao config class names this method reads

    @abstractmethod
    def torchao_config(self, options: Options, device: str) -> Any:
        """The torchao AOBaseConfig to apply on ``device`` ("cpu", "cuda", ...)."""

    def check_model(self, model: nn.Module, names: list[str], options: Options, device: str) -> None:
        """Raise before quantizing if a layer cannot take this method (default: every layer can)."""

    # -- quantize -----------------------------------------------------------------------------
    def quantize(self, source: ModelSource, options: Options) -> nn.Module:
        self.require()
        from torchao.quantization import quantize_
        from transformers import TorchAoConfig

        model = source.model()
        converted = conv1d_to_linear(model, options.skip)
        names = [name for name, _ in linear_layers(model, options.skip)]
        device = next(model.parameters()).device.type
        self.check_model(model, names, options, device)
        config = self.torchao_config(options, device)
        chosen = set(names)
        quantize_(model, config, filter_fn=lambda module, fqn: fqn in chosen)
        qc = TorchAoConfig(config, modules_to_not_convert=list(options.skip)).to_dict()
        qc = json.loads(json.dumps(qc))  # plain JSON values (quant_method is an Enum)
        if converted:
            qc["quant_type"]["default"]["_data"][CONV1D_FLAG] = True
        model.config.quantization_config = qc
        return model

    def is_quantized_module(self, module: nn.Module) -> bool:
        if not isinstance(module, nn.Linear):
            return False
        from torchao.utils import TorchAOBaseTensor

        return isinstance(module.weight, TorchAOBaseTensor)

    def dequantize_module(self, module: nn.Module, dtype: torch.dtype) -> nn.Linear:
        weight = module.weight
        if _is_int4_cpu(weight):
            values = _int4_cpu_matrix(weight, weight.scale_and_zero)
        else:
            values = weight.dequantize()
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device="meta")
        linear.weight = nn.Parameter(values.detach().to(dtype), requires_grad=False)
        if module.bias is not None:
            linear.bias = nn.Parameter(module.bias.detach().to(dtype).clone(), requires_grad=False)
        return linear

    # -- save / load ----------------------------------------------------------------------------
    def save(self, model: nn.Module, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors, metadata = flatten_state_dict(untied_state_dict(model))
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / WEIGHTS_FILE,
                  metadata=metadata)
        model.config.save_pretrained(folder)
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(folder)

    def load(self, folder: Path, config: dict[str, Any], options: LoadOptions) -> nn.Module:
        self.require()
        qc = config["quantization_config"]
        saved = config.get("dtype") or config.get("torch_dtype")
        if options.dtype is not None and str(options.dtype).removeprefix("torch.") != saved:
            raise InvalidOptionError(
                f"{self.name} checkpoints load in the dtype they were quantized in ({saved}); "
                "leave dtype unset, or quantize the model again in the dtype you want."
            )
        self.check_load_device(qc, torch.device(options.device).type)
        if self.stock_loadable(qc):
            from transformers import AutoModelForCausalLM

            return AutoModelForCausalLM.from_pretrained(folder, dtype="auto", device_map=options.device,
                                                        use_safetensors=True).eval()
        return load_flattened(folder).to(options.device).eval()

    def check_load_device(self, quantization_config: dict[str, Any], device: str) -> None:
        """Raise if the checkpoint's layout has no kernel on ``device`` (default: any device)."""

    @classmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        return (quantization_config.get("quant_method") == "torchao"
                and _quant_type(quantization_config).get("_type") in cls.config_types)

    @classmethod
    def stock_loadable(cls, quantization_config: dict[str, Any]) -> bool:
        """True if stock ``AutoModelForCausalLM.from_pretrained`` loads this checkpoint exactly."""
        data = _quant_type(quantization_config).get("_data") or {}
        return cls.capabilities.stock_load and not data.get(CONV1D_FLAG)


class TorchAoInt8(TorchAoBackend):
    name = "torchao-int8"
    aliases = ("int8-weight-only",)
    description = "torchao int8 weight-only, per-row scales; float activations."
    capabilities = Capabilities(bits=(8,), torch_compile=True, format="torchao", stock_load=True)
    config_types = ("Int8WeightOnlyConfig",)

    def torchao_config(self, options: Options, device: str) -> Any:
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


class TorchAoInt8Dynamic(TorchAoBackend):
    name = "torchao-int8-dynamic"
    description = "torchao int8 weights and int8 activations quantized per token at run time."
    capabilities = Capabilities(bits=(8,), torch_compile=True, format="torchao", stock_load=True,
                                activations="int8")
    config_types = ("Int8DynamicActivationInt8WeightConfig",)

    def torchao_config(self, options: Options, device: str) -> Any:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig()


class TorchAoFp8(TorchAoBackend):
    name = "torchao-fp8"
    description = ("torchao float8 (e4m3) weight-only, per-row scales; computes in the float dtype. "
                   "CUDA needs capability 8.9 (Ada, Hopper) for float8.")
    capabilities = Capabilities(bits=(8,), min_cuda_capability=(8, 9), torch_compile=True,
                                format="torchao", stock_load=True)
    config_types = ("Float8WeightOnlyConfig",)

    def torchao_config(self, options: Options, device: str) -> Any:
        from torchao.quantization import Float8WeightOnlyConfig

        return Float8WeightOnlyConfig()


@dataclass
class Int4Options(Options):
    """group_size: weights per scale and zero point along the input dimension (smaller: more
    accurate, larger file). 32, 64, 128 or 256; torchao's CPU int4 kernel takes 32, 64 or 128."""

    group_size: int = 128

    def validate(self) -> None:
        check_choice(TorchAoInt4.name, "group_size", self.group_size, (32, 64, 128, 256))
        if self.device.split(":")[0] == "cpu" and self.group_size not in INT4_CPU_GROUP_SIZES:
            raise InvalidOptionError(
                f"{TorchAoInt4.name}: group_size={self.group_size} has no CPU kernel in torchao "
                f"(its CPU int4 layout takes {', '.join(map(str, INT4_CPU_GROUP_SIZES))}); "
                "use group_size=128, or device='cuda'."
            )


class TorchAoInt4(TorchAoBackend):
    name = "torchao-int4"
    description = ("torchao int4 weight-only, asymmetric, grouped (tinygemm scheme): torchao's CPU "
                   "int4 layout on CPU, its tile-packed layout in bfloat16 on CUDA.")
    capabilities = Capabilities(bits=(4,), min_cuda_capability=(8, 0), torch_compile=True,
                                format="torchao", stock_load=False)
    options_type = Int4Options
    config_types = ("PrototypeInt4WeightOnlyConfig", "Int4WeightOnlyConfig")

    def torchao_config(self, options: Int4Options, device: str) -> Any:
        if device == "cpu":
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

            return PrototypeInt4WeightOnlyConfig(group_size=options.group_size)
        from torchao.quantization import Int4WeightOnlyConfig
        from torchao.quantization.quantize_.workflows import Int4PackingFormat

        return Int4WeightOnlyConfig(group_size=options.group_size,
                                    int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D)

    def check_model(self, model: nn.Module, names: list[str], options: Int4Options, device: str) -> None:
        if device not in ("cpu", "cuda"):
            raise HardwareNotSupportedError(f"{self.name} has int4 kernels on CPU and CUDA, not {device}.")
        if device == "cuda":
            dtype = next(model.parameters()).dtype
            if dtype != torch.bfloat16:
                raise InvalidOptionError(
                    f"{self.name} on CUDA uses torchao's tinygemm kernel, which computes in bfloat16 "
                    f"(the model is {dtype}); pass dtype='bfloat16'."
                )
        group = options.group_size
        bad = [f"{n} {tuple(model.get_submodule(n).weight.shape)}" for n in names
               if model.get_submodule(n).in_features % group
               or (device == "cpu" and model.get_submodule(n).out_features % 16)]
        if bad:
            rule = f"in_features divisible by group_size={group}"
            rule += " and out_features divisible by 16 (torchao's CPU packing)" if device == "cpu" else ""
            shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            raise UnsupportedModelError(
                f"{self.name} needs {rule}; these layers are not: {shown}. Use a smaller group_size, "
                "or keep them in float with skip=[...]."
            )

    def check_load_device(self, quantization_config: dict[str, Any], device: str) -> None:
        cpu_layout = _quant_type(quantization_config).get("_type") == "PrototypeInt4WeightOnlyConfig"
        kind = "cpu" if cpu_layout else "cuda"
        if device != kind:
            raise HardwareNotSupportedError(
                f"This {self.name} checkpoint holds torchao's {kind.upper()} int4 layout, which has no "
                f"{device} kernel. Load it with device={kind!r}, or quantize the float model again on "
                f"{device}."
            )

    @classmethod
    def stock_loadable(cls, quantization_config: dict[str, Any]) -> bool:
        # The CUDA layout is torchao's own safetensors form (not verified here: no GPU); the CPU
        # layout is quantkit's and stock transformers rejects its metadata.
        qt = _quant_type(quantization_config)
        return qt.get("_type") == "Int4WeightOnlyConfig" and not (qt.get("_data") or {}).get(CONV1D_FLAG)


METHODS = [TorchAoInt8, TorchAoInt8Dynamic, TorchAoInt4, TorchAoFp8]


# -- helpers --------------------------------------------------------------------------------------
def _quant_type(quantization_config: dict[str, Any]) -> dict[str, Any]:
    """The torchao config dict inside a TorchAoConfig dict ({} if there is none)."""
    quant_type = quantization_config.get("quant_type")
    default = quant_type.get("default") if isinstance(quant_type, dict) else None
    return default if isinstance(default, dict) else {}


def _is_int4_cpu(tensor: torch.Tensor) -> bool:
    return type(tensor).__name__ == "Int4OpaqueTensor"


def _int4_cpu_matrix(weight: torch.Tensor, scale_and_zero: torch.Tensor) -> torch.Tensor:
    """The [out, in] matrix torchao's CPU int4 kernel multiplies by, read out by multiplying
    identity rows: with the weight's own scales this is its dequantized weight, with scale 1 and
    zero 8 it is the raw 4-bit values. The packing is CPU-specific; this reads any of them."""
    n, k = weight.shape
    rows = []
    for start in range(0, k, _IDENTITY_ROWS):
        index = torch.arange(start, min(start + _IDENTITY_ROWS, k))
        eye = nn.functional.one_hot(index, k).to(scale_and_zero.dtype)
        rows.append(torch.ops.aten._weight_int4pack_mm_for_cpu(
            eye, weight.qdata, weight.block_size[1], scale_and_zero)[:, :n])
    return torch.cat(rows).t().contiguous()


def _int4_cpu_flatten(name: str, weight: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Portable tensors (4-bit values two to a byte, high nibble first) and metadata of one
    Int4OpaqueTensor (weight-only layout)."""
    if any(getattr(weight, a, None) is not None for a in ("act_pre_scale", "qzeros", "compensation")):
        raise UnsupportedModelError(f"{name}: only torchao's weight-only CPU int4 layout can be saved.")
    unit = torch.empty_like(weight.scale_and_zero)
    unit[..., 0], unit[..., 1] = 1, 8  # value = (q - 8) * scale + zero  ->  q
    values = _int4_cpu_matrix(weight, unit).round().to(torch.uint8)
    module, attr = name.rsplit(".", 1)
    tensors = {f"{module}._{attr}_qdata": values[:, 0::2] << 4 | values[:, 1::2],
               f"{module}._{attr}_scale_and_zero": weight.scale_and_zero.detach().clone()}
    meta = {"_type": INT4_CPU_TYPE, "_tensor_data_names": ["qdata", "scale_and_zero"],
            "_data": {"block_size": list(weight.block_size), "shape": list(weight.shape)}}
    return tensors, meta


def _int4_cpu_unflatten(name: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rebuild an Int4OpaqueTensor, packing the 4-bit values for this CPU."""
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor

    module, attr = name.rsplit(".", 1)
    packed = tensors.pop(f"{module}._{attr}_qdata")
    shape = torch.Size(meta["_data"]["shape"])
    values = torch.stack((packed >> 4, packed & 15), dim=-1).reshape(shape).to(torch.int32)
    qdata = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 1)
    return Int4OpaqueTensor(qdata=qdata, scale_and_zero=tensors.pop(f"{module}._{attr}_scale_and_zero"),
                            block_size=meta["_data"]["block_size"], shape=shape)


def untied_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the tied copies transformers re-ties when loading (GPT-2's lm_head)."""
    state = model.state_dict()
    for target, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
        pair = [state.get(target), state.get(source)]
        if all(type(t) is torch.Tensor for t in pair) and pair[0].data_ptr() == pair[1].data_ptr():
            del state[target]
    return state


def flatten_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """torchao's safetensors form of a state dict (tensors, metadata), CPU int4 included."""
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    int4 = {name: t for name, t in state.items() if _is_int4_cpu(t)}
    tensors, metadata = flatten_tensor_state_dict({n: t for n, t in state.items() if n not in int4})
    for name, weight in int4.items():
        data, meta = _int4_cpu_flatten(name, weight)
        tensors.update(data)
        metadata[name] = json.dumps(meta)
    metadata["tensor_names"] = json.dumps(list(state))
    metadata["format"] = "pt"
    return tensors, metadata


def unflatten_state_dict(tensors: dict[str, torch.Tensor],
                         metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """The state dict (with torchao tensor subclasses) that ``flatten_state_dict`` flattened."""
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    tensors = dict(tensors)
    names = json.loads(metadata["tensor_names"])
    metas = {name: json.loads(metadata[name]) for name in names}
    state = {n: _int4_cpu_unflatten(n, m, tensors) for n, m in metas.items()
             if m.get("_type") == INT4_CPU_TYPE}
    rest = dict(metadata, tensor_names=json.dumps([n for n in names if n not in state]))
    unflattened, leftover = unflatten_tensor_state_dict(tensors, rest)
    if leftover or len(unflattened) + len(state) != len(names):
        raise NotAModelError(f"The torchao checkpoint is damaged: tensors {sorted(leftover)[:5]} are "
                             "not described by its metadata, or described tensors are missing.")
    return {**state, **unflattened}


def load_flattened(folder: Path) -> nn.Module:
    """Build the model of ``folder``'s config on the meta device and fill it from the checkpoint."""
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    with safe_open(folder / WEIGHTS_FILE, framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    state = unflatten_state_dict(tensors, metadata)
    model = empty_model(config)
    conv = conv1d_type()
    for name in {key.rsplit(".", 1)[0] for key, value in state.items() if type(value) is not torch.Tensor}:
        if isinstance(model.get_submodule(name), conv):
            set_module(model, name, conv1d_as_linear(model.get_submodule(name)))
    result = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing or result.unexpected_keys:
        raise NotAModelError(
            f"{folder} does not match its config's architecture: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}. The checkpoint is damaged or was edited."
        )
    return model
