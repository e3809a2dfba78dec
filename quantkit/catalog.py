"""``qk.methods()``: every registered method, whether it is installed and usable here, and why not."""

from __future__ import annotations

import dataclasses

from quantkit import registry
from quantkit.hardware import Hardware, hardware
from quantkit.table import Table

COLUMNS = ("method", "bits", "calibration", "installed", "usable", "why not", "format",
           "stock load", "pip")


def option_names(backend) -> list[str]:
    return [f.name for f in dataclasses.fields(backend.options_type)]


def methods(hw: Hardware | None = None) -> Table:
    """A table of every method: bits, calibration, installed?, usable on ``hw`` (default: here)?"""
    hw = hw or hardware()
    rows = []
    for name, backend in registry.all_methods().items():
        caps = backend.capabilities
        installed = backend.is_installed()
        why = None if installed else f"not installed ({backend.pip_line()})"
        why = why or backend.unusable_reason(hw)
        rows.append({
            "method": name,
            "aliases": list(backend.aliases),
            "bits": list(caps.bits),
            "calibration": caps.needs_calibration,
            "installed": installed,
            "usable": why is None,
            "why not": why,
            "format": caps.format,
            "stock load": caps.stock_load,
            "pip": backend.pip_line(),
            "options": option_names(backend),
            "description": backend.description,
        })
    return Table(rows, COLUMNS, title=f"quantkit methods on {hw}")
