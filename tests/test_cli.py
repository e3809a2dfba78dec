"""The ``quantkit`` command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from transformers import AutoModelForCausalLM

from quantkit.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantkit.cli", *args], capture_output=True, text=True)


def test_methods_and_hardware(capsys):
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["method"] == "hqq" for r in rows)
    assert main(["hardware"]) == 0
    assert "RAM" in capsys.readouterr().out


def test_quantize_inspect_dequantize(llama_dir, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", str(llama_dir), "-m", "hqq", "--bits", "8", "-o", str(out)]) == 0
    assert main(["inspect", str(out)]) == 0
    assert "hqq" in capsys.readouterr().out
    assert main(["dequantize", str(out), "-o", str(tmp_path / "plain")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    assert model.config.architectures == ["LlamaForCausalLM"]


def test_errors_exit_2_with_a_message(tmp_path):
    result = run_cli("quantize", str(tmp_path), "-m", "hqq", "-o", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "config.json" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("quantize", str(tmp_path), "-m", "hqqq", "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "Did you mean 'hqq'" in result.stderr
