"""How many parameters a model has, from its config.json only (no weights are read or downloaded).

The count is split into the parameters quantization acts on (the decoder's linear layers) and
those every method keeps in float (embeddings, ``lm_head``, position embeddings, norms). It is
analytic, so it takes microseconds; ``tests/test_selector.py`` checks it against transformers'
own parameter count on meta-device models of several architectures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantkit.errors import NotAModelError, QuantkitError

# Architectures whose MLP is one up- and one down-projection (no gate); the rest are gated
# (up, gate and down projections, as in Llama).
PLAIN_MLP = frozenset({"gpt2", "gpt_bigcode", "gptj", "gpt_neo", "gpt_neox", "opt", "falcon", "bloom",
                       "phi", "starcoder2", "codegen", "mpt", "bert", "roberta"})
# Architectures whose config class ties lm_head to the embeddings when config.json does not say.
TIED_BY_DEFAULT = frozenset({"gpt2", "gpt_bigcode", "gptj", "gpt_neo", "opt", "bloom", "falcon",
                             "gemma", "gemma2", "gemma3_text", "codegen", "mpt", "phi"})
# Architectures with learned position embeddings (a float table of max_positions x hidden).
LEARNED_POSITIONS = {"gpt2": "n_positions", "gpt_bigcode": "n_positions",
                     "gpt_neo": "max_position_embeddings", "opt": "max_position_embeddings"}
# Without a config: Llama-shaped guesses (layers ~ hidden / 128, 12 hidden^2 parameters per layer).
ASSUMED_VOCAB = 32_000
PARAMS_PER_LAYER_PER_HIDDEN_SQ = 12
HIDDEN_PER_LAYER = 128


@dataclass(frozen=True)
class ModelSize:
    """A model's parameter count. ``linear``: in quantizable linear layers; ``kept_float``: in
    embeddings, lm_head, position embeddings and norms, which every method keeps in float."""

    linear: float
    kept_float: float
    source: str            # where the numbers come from, shown to the user
    assumed: bool = False  # True when the float share is a guess (no config.json given)

    @property
    def total(self) -> float:
        return self.linear + self.kept_float

    def __str__(self) -> str:
        return (f"{self.total / 1e9:.3g}B parameters, {self.linear / 1e9:.3g}B of them in linear layers and "
                f"{self.kept_float / 1e9:.2g}B kept in float (embeddings, lm_head, norms); {self.source}")


def model_size(model: Any = None, params: float | None = None) -> ModelSize:
    """The size of ``model`` (a local folder, a Hub id in the local cache, a config dict, or a
    transformers model/config), or of a ``params``-parameter model; ``params`` overrides the total.

    With ``params`` only, the float share is estimated for a Llama-shaped model (see
    ``ASSUMED_VOCAB``). Raises ``QuantkitError`` when neither is given or the config is unreadable.
    """
    if params is not None and (isinstance(params, bool) or not isinstance(params, (int, float))
                               or not math.isfinite(params) or params <= 0):
        raise QuantkitError(f"params={params!r} must be a positive number of parameters, e.g. 7e9.")
    if model is None:
        if params is None:
            raise QuantkitError("Say how big the model is: model='path/or/hub-id' (its config.json is "
                                "read, no weights) or params=7e9.")
        return _assumed(float(params))
    config, where = load_config(model)
    size = size_from_config(config, where)
    if params is None:
        return size
    kept = min(size.kept_float, float(params))
    return ModelSize(float(params) - kept, kept, f"params={params:.3g} given; float layers from {where}")


def _assumed(params: float) -> ModelSize:
    hidden = (params * HIDDEN_PER_LAYER / PARAMS_PER_LAYER_PER_HIDDEN_SQ) ** (1 / 3)
    kept = min(2 * ASSUMED_VOCAB * hidden, params / 2)  # embeddings + untied lm_head
    return ModelSize(params - kept, kept, f"params={params:.3g} given; float layers assumed for a "
                                          f"Llama-shaped model with a {ASSUMED_VOCAB:,}-token vocabulary",
                     assumed=True)


def load_config(model: Any) -> tuple[dict[str, Any], str]:
    """``model``'s config as a dict and a short description of where it came from."""
    if isinstance(model, dict):
        return model, "config dict"
    config = getattr(model, "config", model)
    if hasattr(config, "to_dict"):
        return config.to_dict(), f"{type(config).__name__}"
    path = Path(str(model)).expanduser()
    if path.is_dir() or path.suffix == ".json":
        file = path / "config.json" if path.is_dir() else path
        return _read_json(file), str(file)
    cached = _cached_config(str(model))
    if cached is None:
        raise NotAModelError(
            f"{str(model)!r} is not a local folder, and its config.json is not in the local Hugging Face "
            f"cache (quantkit never downloads to recommend). Pass params=7e9, or fetch the config "
            f"alone: `hf download {model} config.json`."
        )
    return _read_json(cached), f"{model} (config.json from the local Hugging Face cache)"


def _cached_config(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
        return None
    return Path(found) if isinstance(found, str) else None


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise NotAModelError(f"{str(file)!r} does not exist; a Hugging Face model folder holds config.json.")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise NotAModelError(f"{file} is not valid JSON ({exc}).") from exc


def _get(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def size_from_config(config: dict[str, Any], where: str = "config") -> ModelSize:
    """Count a decoder's parameters from its config (dense, grouped-query, MoE and MLA attention)."""
    text = config.get("text_config")
    if isinstance(text, dict) and "hidden_size" not in config:  # multimodal: the language model
        config = {**text, "model_type": text.get("model_type", config.get("model_type", ""))}
    kind = str(config.get("model_type", ""))
    hidden = _get(config, "hidden_size", "n_embd", "d_model", "dim")
    layers = _get(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    vocab = _get(config, "vocab_size", "padded_vocab_size")
    if not (hidden and layers and vocab):
        raise QuantkitError(f"{where}: cannot count parameters (no hidden size, layer count or vocabulary "
                            "size found); pass params=... instead.")
    heads = _get(config, "num_attention_heads", "n_head", "num_heads", default=max(1, hidden // 128))
    head_dim = _get(config, "head_dim", default=hidden // heads)
    kv = 1 if config.get("multi_query") else _get(config, "num_key_value_heads", "n_head_kv", default=heads)

    attention = _mla_attention(config, hidden, heads) if config.get("kv_lora_rank") else \
        hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    inter = _get(config, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", default=4 * hidden)
    mats = 2 if kind in PLAIN_MLP else 3
    dense_mlp = mats * hidden * inter
    experts = _get(config, "num_local_experts", "num_experts", "n_routed_experts", default=0)
    if experts:
        expert_inter = _get(config, "moe_intermediate_size", "expert_intermediate_size", default=inter)
        shared = _get(config, "n_shared_experts", default=0) * expert_inter + \
            _get(config, "shared_expert_intermediate_size", default=0)
        moe_mlp = mats * hidden * (experts * expert_inter + shared) + hidden * experts  # + router
        dense_layers = min(layers, int(_get(config, "first_k_dense_replace", default=0)))
        mlp_total = dense_layers * dense_mlp + (layers - dense_layers) * moe_mlp
    else:
        mlp_total = layers * dense_mlp
    linear = layers * attention + mlp_total

    tied = config.get("tie_word_embeddings", kind in TIED_BY_DEFAULT)
    positions = _get(config, LEARNED_POSITIONS.get(kind, ""), default=0) if kind in LEARNED_POSITIONS else 0
    kept = vocab * hidden * (1 if tied else 2) + positions * hidden + (2 * layers + 1) * hidden
    return ModelSize(float(linear), float(kept), where)


def _mla_attention(config: dict[str, Any], hidden: int, heads: int) -> int:
    """DeepSeek-style multi-head latent attention: low-rank query and key/value projections."""
    q_rank = config.get("q_lora_rank")
    kv_rank = config["kv_lora_rank"]
    rope, nope = config.get("qk_rope_head_dim", 64), config.get("qk_nope_head_dim", 128)
    v_dim = config.get("v_head_dim", 128)
    q = hidden * q_rank + q_rank * heads * (rope + nope) if q_rank else hidden * heads * (rope + nope)
    kv = hidden * (kv_rank + rope) + kv_rank * heads * (nope + v_dim)
    return q + kv + heads * v_dim * hidden
