"""GPTQ through gptqmodel (the maintained successor of AutoGPTQ), saved in the standard GPTQ format.

gptqmodel quantizes layer by layer on calibration data (with its own progress bar per layer) and
writes a checkpoint; quantkit then loads that checkpoint the way the rest of the ecosystem does, with
stock transformers ``from_pretrained`` (which hands the layers to gptqmodel's kernels). So
``qk.quantize``, ``qk.load`` and ``AutoModelForCausalLM.from_pretrained`` give the same model, bit
for bit. The model gptqmodel holds right after quantizing is not used: on CPU its logits differ from
a reload by far more than rounding.

On disk (read by transformers, vLLM and gptqmodel): ``config.json`` with ``quantization_config =
{"quant_method": "gptq", "bits", "group_size", "desc_act", "sym", "checkpoint_format": "gptq", "meta",
...}`` (also written to ``quantize_config.json`` for AutoGPTQ-era readers) and ``model.safetensors``
holding, per quantized layer, ``qweight`` (int32, values packed along the input features, one
little-endian bit stream), ``qzeros`` (int32, packed along the output features, each zero point
stored minus one: the "v1" convention), ``scales`` (float16), ``g_idx`` (group of each input
feature) and ``bias``.

gptqmodel's CPU kernels repack their buffers in place on the first forward pass (``TorchAtenLinear``:
ATen's CPU int4 layout with bfloat16 scales), and loading shifts ``qzeros`` to its internal "v2"
convention, so a model's buffers cannot be written back as a checkpoint. Each loaded layer keeps the
packed tensors as read from disk (``Packed``, a CPU copy the size of the quantized weights); saving
and dequantizing read those.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from abc import abstractmethod
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from quantkit.backends.base import Backend, Capabilities, LoadOptions, float_dtype
from quantkit.calibration import CalibrationOptions, calibration_batches
from quantkit.errors import InvalidOptionError, NotAModelError, NotQuantizedError, QuantkitError
from quantkit.models import ModelSource, conv1d_names, read_config
from quantkit.saving import copy_tokenizer_files
from quantkit.spec import check_choice, parse_dtype

REQUIREMENT = "gptqmodel>=7.5,<7.6"  # 7.7 needs torch >= 2.14.1
DEVICES = ("cpu", "cuda", "rocm", "xpu", "mps")  # gptqmodel's torch kernels run on any torch device
WEIGHTS_FILE = "model.safetensors"
STOCK_FLAG = "quantkit_stock_load"  # in quantization_config["meta"]: False where stock transformers fails
PACKED_ATTR = "_quantkit_packed"
CONFIG_ATTR = "_quantkit_quantization_config"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def import_gptqmodel():
    """gptqmodel, imported after letting its CPU thread pool start on small machines: with two
    cores or fewer its default pool (one worker) refuses the two-worker model-loader pool."""
    if (os.cpu_count() or 1) <= 2:
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    import gptqmodel

    return gptqmodel


@dataclass
class Packed:
    """A quantized layer's tensors exactly as in its checkpoint, and how to read them.

    zero_offset: 1 for GPTQ "v1" checkpoints (zero points stored minus one), else 0.
    """

    tensors: dict[str, torch.Tensor]
    bits: int
    zero_offset: int = 0


def check_bool(method: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{method}: {name}={value!r} is not supported; choose True or False.")


def check_no_skip(method: str, skip: tuple[str, ...]) -> None:
    """Refuse skip= beyond lm_head: gptqmodel records it as a per-module ``dynamic`` rule, which stock
    transformers ignores when loading (the skipped layer would come back as uninitialized weights)."""
    extra = [s for s in skip if s != "lm_head"]
    if extra:
        raise InvalidOptionError(
            f"{method}: skip={extra} is not supported. gptqmodel stores skipped layers as a 'dynamic' "
            "rule that transformers ignores when loading, so they would load as garbage. Quantize every "
            "layer (lm_head always stays in float), or use a method that supports skip (hqq, torchao)."
        )


@dataclass
class GptqOptions(CalibrationOptions):
    """bits: 2, 3, 4 or 8.   group_size: input features sharing one scale and zero (-1: one group
    per row).   desc_act: quantize columns in order of decreasing activation (act-order; a bit more
    accurate, g_idx no longer sorted).   sym: symmetric (zero point fixed at the middle)."""

    bits: int = 4
    group_size: int = 128
    desc_act: bool = False
    sym: bool = True

    def validate(self) -> None:
        super().validate()
        if isinstance(self.bits, bool):
            raise InvalidOptionError(f"gptq: bits={self.bits!r} must be an int, one of 2, 3, 4, 8.")
        check_choice("gptq", "bits", self.bits, (2, 3, 4, 8))
        if isinstance(self.group_size, bool):
            raise InvalidOptionError(f"gptq: group_size={self.group_size!r} must be an int.")
        check_choice("gptq", "group_size", self.group_size, (-1, 32, 64, 128))
        check_bool("gptq", "desc_act", self.desc_act)
        check_bool("gptq", "sym", self.sym)
        check_no_skip("gptq", self.skip)


class GptqModelBackend(Backend):
    """What gptq and awq share: gptqmodel quantizes, stock transformers loads, quantkit saves."""

    library = "gptqmodel"
    requirement = REQUIREMENT
    extra_packages: ClassVar[tuple[str, ...]] = ("requests",)  # gptqmodel 7.5 imports it undeclared
    packed_names: ClassVar[tuple[str, ...]]

    @classmethod
    def is_installed(cls) -> bool:
        return all(find_spec(name) is not None for name in (cls.library, *cls.extra_packages))

    @classmethod
    def pip_line(cls) -> str:
        return f'pip install "{cls.requirement}" {" ".join(cls.extra_packages)}'

    # -- per method -----------------------------------------------------------------------------
    @abstractmethod
    def quantize_config(self, options: CalibrationOptions) -> Any:
        """gptqmodel's quantize config for ``options``."""

    def quantize_kwargs(self) -> dict[str, Any]:
        """Extra arguments to gptqmodel's ``quantize()``."""
        return {}

    def compute_dtype(self, options: CalibrationOptions, source: ModelSource) -> torch.dtype:
        """The float dtype gptqmodel loads the model in (default: the model's own)."""
        return options.dtype or source_dtype(source)

    def check_source(self, config: Any) -> None:
        """Raise before calibrating if the architecture cannot take this method."""

    def check_format(self, quantization_config: dict[str, Any]) -> None:
        """Raise if a checkpoint's packing is one quantkit cannot read back."""

    @abstractmethod
    def unpack(self, packed: Packed) -> torch.Tensor:
        """The dequantized float32 weight [out, in] of a layer."""

    def zero_offset(self, quantization_config: dict[str, Any]) -> int:
        """How much to add to the stored zero points (see ``Packed``)."""
        return 0

    # -- quantize -------------------------------------------------------------------------------
    def quantize(self, source: ModelSource, options: CalibrationOptions) -> nn.Module:
        self.require()
        self.check_source(source.config)
        batches = calibration_batches(options, source)
        dtype = self.compute_dtype(options, source)
        gptqmodel = import_gptqmodel()
        with tempfile.TemporaryDirectory(prefix=f"quantkit-{self.name}-", ignore_cleanup_errors=True) as tmp:
            float_dir = stage_float_model(source, options, Path(tmp) / "float")
            qmodel = gptqmodel.GPTQModel.load(str(float_dir), self.quantize_config(options), dtype=dtype)
            rows = [{"input_ids": row.tolist(), "attention_mask": [1] * row.numel()} for row in batches]
            qmodel.quantize(rows, calibration_data_min_length=1, **self.quantize_kwargs())
            out = Path(tmp) / "quantized"
            qmodel.save(str(out))
            del qmodel
            finish_folder(out, float_dir)
            # the model gptqmodel holds after quantizing computes differently from any reload, so
            # return the reload: what qk.load and stock transformers give for the saved folder
            return self.load(out, read_config(out), LoadOptions(device=options.device))

    # -- layers ---------------------------------------------------------------------------------
    def is_quantized_module(self, module: nn.Module) -> bool:
        qlinear = sys.modules.get("gptqmodel.nn_modules.qlinear")  # none exists before the import
        if qlinear is None or not isinstance(module, qlinear.BaseQuantLinear):
            return False
        return isinstance(module, qlinear.AWQuantLinear) == (self.capabilities.format == "awq")

    def dequantize_module(self, module: nn.Module, dtype: torch.dtype) -> nn.Linear:
        packed = packed_of(module)
        weight = self.unpack(packed)
        bias = packed.tensors.get("bias")
        device = next(module.buffers()).device
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.to(device, dtype), requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias.to(device, dtype), requires_grad=False)
        return linear

    # -- save / load ----------------------------------------------------------------------------
    def save(self, model: nn.Module, folder: Path) -> None:
        from safetensors.torch import save_file

        layers = {name: m for name, m in model.named_modules() if self.is_quantized_module(m)}
        if not layers:
            raise NotQuantizedError(f"{self.name}: this model has no {self.name} layers; nothing to save.")
        tensors = float_tensors(model, set(layers))
        for name, module in layers.items():
            tensors.update({f"{name}.{k}": t.contiguous() for k, t in packed_of(module).tensors.items()})
        save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})

        quantization_config = quantization_config_of(model)
        config = copy.deepcopy(model.config)
        config.quantization_config = quantization_config
        config.architectures = [type(model).__name__]
        config.dtype = float_dtype(model)
        config.to_json_file(folder / "config.json")
        (folder / "quantize_config.json").write_text(json.dumps(quantization_config, indent=2) + "\n")
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(folder)

    def load(self, folder: Path, config: dict[str, Any], options: LoadOptions) -> nn.Module:
        self.require()
        quantization_config = config["quantization_config"]
        self.check_format(quantization_config)
        model = load_with_transformers(folder, options)
        attach_packed(model, folder, self, self.zero_offset(quantization_config))
        setattr(model, CONFIG_ATTR, copy.deepcopy(quantization_config))
        return model.eval()

    @classmethod
    def stock_loadable(cls, quantization_config: dict[str, Any]) -> bool:
        meta = quantization_config.get("meta") or {}
        return cls.capabilities.stock_load and meta.get(STOCK_FLAG, True) is not False


class Gptq(GptqModelBackend):
    name = "gptq"
    aliases = ("gptqmodel",)
    description = ("GPTQ through gptqmodel: 2/3/4/8-bit weights fitted on calibration data; standard "
                   "GPTQ checkpoints (transformers, vLLM)")
    extra_packages = ("requests", "optimum")  # transformers loads GPTQ checkpoints through optimum
    capabilities = Capabilities(
        bits=(2, 3, 4, 8), needs_calibration=True, on_the_fly=False, serializable=True,
        peft_trainable=True, devices=DEVICES, format="gptq", stock_load=True,
    )
    options_type = GptqOptions
    packed_names = ("qweight", "qzeros", "scales", "g_idx", "bias")

    def quantize_config(self, options: GptqOptions) -> Any:
        from gptqmodel import QuantizeConfig

        return QuantizeConfig(bits=options.bits, group_size=options.group_size, desc_act=options.desc_act,
                              sym=options.sym, device=options.device, offload_to_disk=False)

    def zero_offset(self, quantization_config: dict[str, Any]) -> int:
        fmt = quantization_config.get("checkpoint_format") or quantization_config.get("format") or "gptq"
        return 1 if str(fmt).lower() == "gptq" else 0

    def unpack(self, packed: Packed) -> torch.Tensor:
        t, bits = packed.tensors, packed.bits
        values = unpack_bits(t["qweight"], bits, dim=0)  # [in, out]
        zeros = (unpack_bits(t["qzeros"], bits, dim=1) + packed.zero_offset) & ((1 << bits) - 1)
        rows, groups = values.shape[0], t["scales"].shape[0]
        group = t["g_idx"].long() if "g_idx" in t else torch.arange(rows) // -(-rows // groups)
        weight = (values.float() - zeros[group].float()) * t["scales"].float()[group]
        return weight.t().contiguous()

    @classmethod
    def owns(cls, quantization_config: dict[str, Any]) -> bool:
        return quantization_config.get("quant_method") == "gptq"


METHODS = [Gptq]


# -- helpers --------------------------------------------------------------------------------------
def source_dtype(source: ModelSource) -> torch.dtype:
    """The float dtype of the model to quantize, without loading it when it is a folder."""
    if source.dtype is not None:
        return source.dtype
    if source.given is not None:
        return float_dtype(source.given)
    dtype = getattr(source.config, "dtype", None)
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def stage_float_model(source: ModelSource, options: CalibrationOptions, folder: Path) -> Path:
    """A folder gptqmodel can quantize from: the model's own when it has a tokenizer, else a copy.

    gptqmodel loads the folder's tokenizer even when calibration is token ids; without one at hand
    (an in-memory model, no ``tokenizer=``) it gets a one-token stand-in, used only for padding,
    which quantkit's unpadded one-row batches never need.
    """
    if source.path is not None and has_tokenizer(source.path):
        return source.path
    source.model().save_pretrained(folder, safe_serialization=True)
    if options.tokenizer is not None:
        options.tokenizer.save_pretrained(folder)
    else:
        origin = source.path or getattr(source.given, "name_or_path", None)
        copy_tokenizer_files(Path(origin) if origin else None, folder)
    if not has_tokenizer(folder):
        placeholder_tokenizer().save_pretrained(folder)
    return folder


def placeholder_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = models.WordLevel({"<pad>": 0}, unk_token="<pad>")
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(vocab), pad_token="<pad>")


def finish_folder(out: Path, float_dir: Path) -> None:
    """Undo what gptqmodel changes besides the weights, and mark folders stock transformers fails on.

    gptqmodel rewrites generation_config.json (it turns sampling on); the float model's file is
    restored. transformers 5.24 cannot load a quantized GPT-2 style model (its weight init reaches
    for ``c_proj.weight``, which a quantized layer does not have), so such folders are marked.
    """
    generation = float_dir / "generation_config.json"
    if generation.is_file():
        shutil.copy2(generation, out / "generation_config.json")
    else:
        (out / "generation_config.json").unlink(missing_ok=True)
    config = read_config(out)
    if has_conv1d(out):
        config["quantization_config"].setdefault("meta", {})[STOCK_FLAG] = False
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def has_conv1d(folder: Path) -> bool:
    from transformers import AutoConfig

    return bool(conv1d_names(AutoConfig.from_pretrained(folder)))


def load_with_transformers(folder: Path, options: LoadOptions) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained``; for GPT-2 style models with one fix: modules holding
    quantized layers are marked initialized, so transformers' weight init does not reach for their
    ``weight`` (GPT-2 re-initializes ``c_proj.weight``, which a quantized layer does not have)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"dtype": options.dtype or "auto", "device_map": options.device, "use_safetensors": True}
    config = AutoConfig.from_pretrained(folder)
    if not conv1d_names(config):
        return AutoModelForCausalLM.from_pretrained(folder, config=config, **kwargs)
    cls = AutoModelForCausalLM._model_mapping[type(config)]

    def initialize_weights(self) -> None:
        qlinear = sys.modules.get("gptqmodel.nn_modules.qlinear")
        for module in self.modules():
            if qlinear and any(isinstance(child, qlinear.BaseQuantLinear) for child in module.children()):
                module._is_hf_initialized = True
        cls.initialize_weights(self)

    methods = {"initialize_weights": initialize_weights, "__module__": cls.__module__}
    loader = type(cls.__name__, (cls,), methods)
    model = loader.from_pretrained(folder, config=config, **kwargs)
    model.__class__ = cls
    return model


def read_tensors(folder: Path, prefixes: set[str]) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of the modules named in ``prefixes`` (single or sharded safetensors)."""
    from safetensors import safe_open

    index = folder / f"{WEIGHTS_FILE}.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else [WEIGHTS_FILE]
    out = {}
    for name in files:
        with safe_open(folder / name, framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no iterator
                if key.rpartition(".")[0] in prefixes:
                    out[key] = f.get_tensor(key)
    return out


def attach_packed(model: nn.Module, folder: Path, backend: GptqModelBackend, zero_offset: int) -> None:
    """Give every quantized layer its packed tensors as stored in ``folder``."""
    layers = {name: m for name, m in model.named_modules() if backend.is_quantized_module(m)}
    tensors = read_tensors(folder, set(layers))
    for name, module in layers.items():
        mine = {k: tensors[f"{name}.{k}"] for k in backend.packed_names if f"{name}.{k}" in tensors}
        if "qweight" not in mine:
            raise NotAModelError(f"{folder}: layer {name!r} has no packed weights; the checkpoint is damaged")
        setattr(module, PACKED_ATTR, Packed(mine, int(module.bits), zero_offset))


def packed_of(module: nn.Module) -> Packed:
    packed = getattr(module, PACKED_ATTR, None)
    if packed is None:
        raise QuantkitError(
            "This quantized layer was not loaded by quantkit, and gptqmodel's kernels repack their buffers "
            "in place, so its checkpoint tensors cannot be recovered. Load the folder with qk.load() "
            "(or pass the folder to qk.dequantize) instead."
        )
    return packed


def quantization_config_of(model: nn.Module) -> dict[str, Any]:
    """The quantization_config as the checkpoint had it (transformers' object adds its own defaults)."""
    saved = getattr(model, CONFIG_ATTR, None)
    if saved is not None:
        return copy.deepcopy(saved)
    config = model.config.quantization_config
    return config if isinstance(config, dict) else config.to_dict()


def float_tensors(model: nn.Module, quantized: set[str]) -> dict[str, torch.Tensor]:
    """The state dict outside the quantized layers, without the tied copies transformers re-ties."""
    state = model.state_dict()
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    out = {}
    for key, tensor in state.items():
        if key.rpartition(".")[0] in quantized:
            continue
        source = state.get(tied.get(key, ""))
        if source is not None and source.data_ptr() == tensor.data_ptr():
            continue
        out[key] = tensor.detach().cpu().contiguous()
    return out


def unpack_bits(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Integer values packed into int32 words along ``dim``, lowest bits first. 2, 4 and 8 bits fill
    whole words; 3-bit values run on across word boundaries (one little-endian bit stream)."""
    words = packed.movedim(dim, -1).to(torch.int32)
    if 32 % bits == 0:
        shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=words.device)
        values = ((words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).flatten(-2)
    else:
        shifts = torch.arange(32, dtype=torch.int32, device=words.device)
        stream = ((words.unsqueeze(-1) >> shifts) & 1).flatten(-2).unflatten(-1, (-1, bits))
        values = (stream << torch.arange(bits, dtype=torch.int32, device=words.device)).sum(-1)
    return values.movedim(-1, dim)
