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
    on_a100 = {r["method"]: r for r in qk.methods(Hardware.cuda(capability=(8, 0), memory_gb=80))}
    assert not on_a100["torchao-fp8"]["usable"] and "8.9" in on_a100["torchao-fp8"]["why not"]
    assert on_a100["bnb-nf4"]["usable"] and on_a100["torchao-int4"]["usable"]
    on_mac = {r["method"]: r for r in qk.methods(Hardware.mps())}
    assert not on_mac["hqq"]["usable"] and "mps" in on_mac["hqq"]["why not"]


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


def test_readme_methods_table_lists_every_registered_method():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table_rows = [line for line in readme.splitlines() if line.startswith("| `")]
    listed = {line.split("`")[1] for line in table_rows}
    assert listed == set(registry.all_methods())
