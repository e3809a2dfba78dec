"""Calibration data in every accepted form becomes the same kind of deterministic token batches."""

from __future__ import annotations

import pytest
import torch

import quantkit as qk
from quantkit.calibration import CalibrationOptions, calibration_batches
from quantkit.errors import CalibrationError
from quantkit.models import ModelSource
from quantkit.testing import TINY_CORPUS, tiny_corpus, tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def batches(data, source=None, **options):
    source = source or ModelSource(given=tiny_llama())
    return calibration_batches(CalibrationOptions(calibration=data, **options), source)


def test_texts_give_seeded_windows_of_seq_len(tokenizer):
    texts = tiny_corpus()
    rows = batches(texts, tokenizer=tokenizer, n_samples=5, seq_len=32, seed=3)
    assert len(rows) == 5 and all(r.shape == (32,) and r.dtype == torch.long for r in rows)
    again = batches(texts, tokenizer=tokenizer, n_samples=5, seq_len=32, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(rows, again, strict=True))
    other = batches(texts, tokenizer=tokenizer, n_samples=5, seq_len=32, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(rows, other, strict=True))
    stream = tokenizer("\n".join(texts))["input_ids"]
    assert set(rows[0].tolist()) <= set(stream) | {tokenizer.eos_token_id}


def test_text_file_and_the_models_own_tokenizer(llama_dir):
    source = ModelSource(path=llama_dir)
    from_file = batches(str(TINY_CORPUS), source, n_samples=3, seq_len=16)
    from_list = batches(TINY_CORPUS.read_text(encoding="utf-8").split("\n\n"), source, n_samples=3,
                        seq_len=16)
    assert [r.tolist() for r in from_file] == [r.tolist() for r in from_list]


def test_local_dataset_by_name_and_as_object(tmp_path, tokenizer):
    import datasets

    (tmp_path / "cal.txt").write_text(TINY_CORPUS.read_text(encoding="utf-8"), encoding="utf-8")
    spec = qk.calibration.dataset("text", split="train", column="text",
                                  data_files=str(tmp_path / "cal.txt"))
    by_name = batches(spec, tokenizer=tokenizer, n_samples=4, seq_len=16)
    as_object = batches(datasets.Dataset.from_dict({"text": tiny_corpus()}), tokenizer=tokenizer,
                        n_samples=4, seq_len=16)
    assert [r.tolist() for r in by_name] == [r.tolist() for r in as_object]
    with pytest.raises(CalibrationError, match="no column 'body'"):
        batches(qk.calibration.dataset("text", column="body", data_files=str(tmp_path / "cal.txt")),
                tokenizer=tokenizer)


def test_token_ids_are_used_as_given():
    ids = torch.arange(0, 200).reshape(4, 50)
    rows = batches(ids, n_samples=3, seq_len=20)
    assert [r.tolist() for r in rows] == [list(range(s, s + 20)) for s in (0, 50, 100)]
    rows = batches([torch.tensor([1, 2, 3]), torch.tensor([[4, 5]])], seq_len=8)
    assert [r.tolist() for r in rows] == [[1, 2, 3], [4, 5]]


def test_missing_or_bad_calibration_says_how_to_pass_it(tokenizer):
    for data in (None, []):
        with pytest.raises(CalibrationError, match="list of strings"):
            batches(data, tokenizer=tokenizer)
    with pytest.raises(CalibrationError, match="is not a file"):
        batches("no/such/file.txt", tokenizer=tokenizer)
    with pytest.raises(CalibrationError, match="not understood"):
        batches(12345, tokenizer=tokenizer)
    with pytest.raises(CalibrationError, match="integer tensors"):
        batches(torch.rand(2, 8))
    with pytest.raises(CalibrationError, match="only"):
        batches(["hi"], tokenizer=tokenizer)
    with pytest.raises(CalibrationError, match="positive integer"):
        CalibrationOptions(n_samples=0)


def test_token_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(CalibrationError, match="vocabulary"):
        batches(torch.tensor([[1, 2, 9999] * 4]))


def test_short_data_gives_one_sample_with_a_warning(tokenizer):
    with pytest.warns(UserWarning, match="fewer than seq_len"):
        rows = batches(tiny_corpus()[:1], tokenizer=tokenizer, seq_len=4096)
    assert len(rows) == 1


def test_options_record_a_description_not_the_data(tokenizer):
    record = CalibrationOptions(calibration=tiny_corpus(), tokenizer=tokenizer).to_json()
    assert record["calibration"] == f"list of {len(tiny_corpus())}"
