"""One exception family: every error says what is wrong and what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class QuantkitError(Exception):
    """Base class of every error quantkit raises on purpose."""


class UnknownMethodError(QuantkitError, KeyError):
    """The method name is not registered."""

    def __init__(self, name: str, known: Iterable[str], aliases: dict[str, str] | None = None):
        known = sorted(set(known))
        aliases = aliases or {}
        near_keys = difflib.get_close_matches(name.lower(), [*known, *aliases], n=5, cutoff=0.4)
        near = list(dict.fromkeys(aliases.get(k, k) for k in near_keys))[:3]
        hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        super().__init__(
            f"Unknown quantization method {name!r}.{hint} "
            f"Known methods: {', '.join(known)}. `qk.methods()` lists them with what each needs."
        )
        self.name = name
        self.nearest = near

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidOptionError(QuantkitError, ValueError):
    """An option is unknown, or its value is not supported by the method."""


class BackendNotInstalledError(QuantkitError, ImportError):
    """The library that implements a method is not installed."""

    def __init__(self, method: str, package: str, pip_line: str):
        super().__init__(
            f"Method {method!r} needs the package {package!r}, which is not installed. "
            f"Install it with: {pip_line}"
        )
        self.pip_line = pip_line


class HardwareNotSupportedError(QuantkitError, RuntimeError):
    """The method cannot run on the requested or detected hardware."""


class NotAModelError(QuantkitError, FileNotFoundError):
    """A path that should hold a Hugging Face model does not."""


class NotQuantizedError(QuantkitError, ValueError):
    """A quantized model was expected (for save or dequantize) but this one is plain float."""


class UnsupportedModelError(QuantkitError, ValueError):
    """The model has layers the method cannot quantize, so it would stay silently in float."""


class SaveError(QuantkitError, OSError):
    """A save would overwrite something it must not; nothing was written."""


class CalibrationError(QuantkitError, ValueError):
    """Calibration data is missing or unusable for a method that needs it."""


class EvalDataError(QuantkitError, ValueError):
    """The evaluation text for ``compare`` is missing, too short, or of a form quantkit cannot read."""
