"""Typed options per method: parsing and validation with clear errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from quantkit.errors import InvalidOptionError

ALWAYS_FLOAT = ("lm_head",)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def parse_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """``"bf16"``, ``"bfloat16"``, ``torch.bfloat16`` -> ``torch.bfloat16``; None stays None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    key = str(value).removeprefix("torch.").lower()
    if key not in _DTYPES:
        raise InvalidOptionError(
            f"dtype={value!r} is not a float dtype quantkit knows; use one of "
            f"{', '.join(sorted(_DTYPES))} or a torch.dtype."
        )
    return _DTYPES[key]


@dataclass
class Options:
    """Options every method takes.

    skip: module names (or name suffixes) to keep in float; ``lm_head`` is always kept.
    dtype: float dtype of the layers that stay in float and of the compute (default: the model's).
    device: where the quantized model lives (default ``"cpu"``).
    """

    skip: tuple[str, ...] = ()
    dtype: torch.dtype | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.skip, str):
            self.skip = (self.skip,)
        self.skip = tuple(dict.fromkeys((*ALWAYS_FLOAT, *self.skip)))
        self.dtype = parse_dtype(self.dtype)
        self.validate()

    def validate(self) -> None:
        """Raise InvalidOptionError for a value the method does not support."""

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["skip"] = list(self.skip)
        out["dtype"] = str(self.dtype).removeprefix("torch.") if self.dtype else None
        return out


def check_choice(method: str, name: str, value: Any, allowed: tuple) -> None:
    """Raise InvalidOptionError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise InvalidOptionError(
            f"{method}: {name}={value!r} is not supported; choose one of "
            f"{', '.join(repr(a) for a in allowed)}."
        )


def build_options(method: str, options_type: type[Options], given: dict[str, Any]) -> Options:
    """Make the method's options from keyword arguments, naming any unknown key."""
    names = {f.name for f in dataclasses.fields(options_type)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise InvalidOptionError(
            f"{method}: unknown option(s) {', '.join(unknown)}; "
            f"this method takes {', '.join(sorted(names))}."
        )
    try:
        return options_type(**given)
    except TypeError as exc:  # pragma: no cover - dataclass signature errors
        raise InvalidOptionError(f"{method}: {exc}") from exc

