"""The registry, ``qk.methods()`` and ``qk.hardware()``."""

from __future__ import annotations

import subprocess
import sys

import quantkit as qk
from quantkit import registry
from quantkit.hardware import Hardware

EXPECTED = {"bnb-nf4", "bnb-fp4", "bnb-int8", "hqq", "torchao-int8", "torchao-int8-dynamic",
            "torchao-int4", "torchao-fp8"}


def test_every_issue_method_is_registered_with_its_aliases():
    assert set(registry.all_methods()) >= EXPECTED
    assert registry.canonical_name("NF4") == "bnb-nf4"
    assert registry.canonical_name("bnb_int8") == "bnb-int8"


def test_methods_table_reports_installed_usable_and_pip_line():
    table = qk.methods()
    rows = {r["method"]: r for r in table}
    assert set(rows) >= EXPECTED
    for row in rows.values():
        assert row["pip"].startswith("pip install ")
        assert row["usable"] == (row["why not"] is None)
    assert all(rows[m]["usable"] for m in EXPECTED), {m: rows[m]["why not"] for m in EXPECTED}
    assert "method" in str(table) and "<table>" in table._repr_html_()


def test_methods_for_declared_hardware_say_why_not():
    rows = {r["method"]: r for r in qk.methods(Hardware.mps())}
    assert not rows["bnb-nf4"]["usable"] or rows["bnb-nf4"]["why not"] is None
    assert any(not r["usable"] for r in rows.values())


def test_hardware_detects_this_machine():
    hw = qk.hardware()
    assert hw.detected and hw.kind in ("cpu", "cuda", "rocm", "mps", "xpu")
    assert hw.ram_gb and hw.ram_gb > 0 and hw.cpu_count >= 1
    assert hw.kind in str(hw)


def test_import_quantkit_imports_no_backend_library():
    code = ("import sys, quantkit as qk; qk.methods(); "
            "bad = [m for m in ('bitsandbytes', 'hqq', 'torchao') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
