"""Method name -> backend class: the built-in backends, aliases, and entry-point plug-ins."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from quantkit.backends.base import Backend
from quantkit.errors import QuantkitError, UnknownMethodError

BUILTIN_MODULES = ("bitsandbytes", "hqq", "torchao", "compressed_tensors", "gptq", "awq")
ENTRY_POINT_GROUP = "quantkit.backends"

_methods: dict[str, type[Backend]] | None = None
_aliases: dict[str, str] = {}


def register(backend: type[Backend]) -> type[Backend]:
    """Add a backend class under its name and aliases (usable as a class decorator)."""
    table = _table()
    for key in (backend.name, *backend.aliases):
        owner = _aliases.get(key.lower())
        if owner and owner != backend.name:
            raise QuantkitError(f"method name {key!r} is already taken by {owner!r}")
    table[backend.name] = backend
    for key in (backend.name, *backend.aliases):
        _aliases[key.lower()] = backend.name
    return backend


def _table() -> dict[str, type[Backend]]:
    global _methods
    if _methods is None:
        _methods = {}
        for module_name in BUILTIN_MODULES:
            module = importlib.import_module(f"quantkit.backends.{module_name}")
            for backend in module.METHODS:
                register(backend)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            for backend in _as_list(entry.load()):
                register(backend)
    return _methods


def _as_list(obj) -> list[type[Backend]]:
    return list(obj) if isinstance(obj, (list, tuple)) else [obj]


def all_methods() -> dict[str, type[Backend]]:
    """Every registered method, by canonical name, in registration order."""
    return dict(_table())


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases (case-insensitive)."""
    _table()
    key = name.strip().lower().replace("_", "-")
    if key not in _aliases:
        raise UnknownMethodError(name, list(_table()), dict(_aliases))
    return _aliases[key]


def get(name: str) -> type[Backend]:
    """The backend class registered for ``name`` (a method name or alias)."""
    return _table()[canonical_name(name)]
