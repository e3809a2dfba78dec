"""Bad input gets a quantkit error that names the problem and the fix; nothing is half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import quantkit as qk
from quantkit import registry
from quantkit.backends.base import Backend, Capabilities
from quantkit.errors import (
    BackendNotInstalledError,
    InvalidOptionError,
    NotAModelError,
    NotQuantizedError,
    QuantkitError,
    SaveError,
    UnknownMethodError,
)
from quantkit.saving import write_atomically
from quantkit.testing import tiny_llama


def test_unknown_method_lists_nearest_names():
    with pytest.raises(UnknownMethodError) as err:
        qk.quantize(tiny_llama(), "bnb-nf5")
    assert "bnb-nf4" in err.value.nearest
    assert "Did you mean" in str(err.value) and "hqq" in str(err.value)


def test_unknown_option_names_the_options_the_method_takes():
    with pytest.raises(InvalidOptionError, match="unknown option.*bitz.*bits"):
        qk.quantize(tiny_llama(), "hqq", bitz=4)


@pytest.mark.parametrize("options", [{"bits": 5}, {"bits": 0}, {"group_size": -8}])
def test_unsupported_bits_or_group_size(options):
    with pytest.raises(InvalidOptionError):
        qk.quantize(tiny_llama(), "hqq", **options)


def test_torchao_int4_group_size_is_checked():
    with pytest.raises(InvalidOptionError, match="group_size"):
        qk.quantize(tiny_llama(), "torchao-int4", group_size=100)


def test_bad_dtype_is_named():
    with pytest.raises(InvalidOptionError, match="dtype"):
        qk.quantize(tiny_llama(), "bnb-nf4", dtype="int3")


class _NotInstalled(Backend):
    name = "test-not-installed"
    library = "quantkit_surely_absent_package"
    requirement = "quantkit-surely-absent-package>=1.0"
    capabilities = Capabilities(bits=(4,))

    def quantize(self, source, options):  # pragma: no cover - never reached
        raise AssertionError

    is_quantized_module = dequantize_module = save = load = quantize

    @classmethod
    def owns(cls, quantization_config):
        return False


def test_missing_backend_package_gives_the_pip_line():
    registry.register(_NotInstalled)
    try:
        with pytest.raises(BackendNotInstalledError) as err:
            qk.quantize(tiny_llama(), "test-not-installed")
        assert 'pip install "quantkit-surely-absent-package>=1.0"' in str(err.value)
        row = next(r for r in qk.methods() if r["method"] == "test-not-installed")
        assert not row["installed"] and not row["usable"] and "pip install" in row["why not"]
    finally:
        registry.all_methods()  # the table stays usable
        registry._table().pop("test-not-installed")
        registry._aliases.pop("test-not-installed")


def test_path_that_is_not_a_model(tmp_path):
    with pytest.raises(NotAModelError, match="config.json"):
        qk.quantize(tmp_path, "bnb-nf4")
    with pytest.raises(NotAModelError):
        qk.quantize(tmp_path / "missing-folder", "hqq")
    with pytest.raises(NotAModelError):
        qk.load(tmp_path)


def test_folder_with_only_pickled_weights_is_refused(tmp_path):
    tiny_llama().config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(NotAModelError, match="safetensors"):
        qk.quantize(tmp_path, "hqq")


def test_load_of_float_folder_says_it_is_not_quantized(llama_dir):
    with pytest.raises(NotQuantizedError):
        qk.load(llama_dir)


def test_save_refuses_the_source_folder_and_non_empty_folders(llama_dir, tmp_path):
    model = qk.quantize(llama_dir, "hqq")
    before = sorted(p.name for p in llama_dir.iterdir())
    with pytest.raises(SaveError, match="loaded from"):
        qk.save(model, llama_dir)
    with pytest.raises(SaveError, match="loaded from"):
        qk.save(model, llama_dir / "inside")
    assert sorted(p.name for p in llama_dir.iterdir()) == before

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(SaveError, match="overwrite=True"):
        qk.save(model, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    qk.save(model, busy, overwrite=True)
    assert not (busy / "keep.txt").exists() and (busy / "quantkit.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["busy"], "no temporary folder left behind"


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out"

    def half_write(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_write)
    assert list(tmp_path.iterdir()) == []


def test_saving_a_pickle_is_refused(tmp_path):
    with pytest.raises(SaveError, match="pickle"):
        write_atomically(tmp_path / "out", lambda f: torch.save({}, f / "weights.pt"))
    assert list(tmp_path.iterdir()) == []


def test_dequantize_of_a_float_model_is_an_error():
    with pytest.raises(NotQuantizedError):
        qk.dequantize(tiny_llama())


def test_quantizing_a_quantized_model_is_an_error(llama_dir):
    with pytest.raises(QuantkitError, match="already quantized"):
        qk.quantize(qk.quantize(llama_dir, "hqq"), "hqq")


def test_device_this_machine_lacks_is_named():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(QuantkitError, match="cuda"):
        qk.quantize(tiny_llama(), "hqq", device="cuda")


def test_caller_model_is_not_modified():
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qk.quantize(model, "hqq")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
