"""Text given in any accepted form (strings, a file, a Hugging Face dataset) as a list of strings.

Shared by calibration data and compare's eval text; each caller passes its own error type and
how-to message, so the error names the argument the user got wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantkit.errors import QuantkitError


@dataclass(frozen=True)
class DatasetSpec:
    """A Hugging Face dataset: name (or builder such as "text"), split, column, config, data files."""

    name: str
    split: str = "train"
    column: str = "text"
    config: str | None = None
    data_files: Any = None

    def describe(self) -> str:
        return f"dataset {self.name} ({self.config or '-'}) split {self.split} column {self.column}"


def dataset_texts(data: Any, column: str, error: type[QuantkitError]) -> list[str]:
    """The non-empty strings of one column of a loaded ``datasets.Dataset``."""
    if column not in data.column_names:
        raise error(
            f"the dataset has no column {column!r}; its columns are {data.column_names}. "
            "Pass column= to qk.calibration.dataset()."
        )
    return [t for t in data[column] if isinstance(t, str) and t.strip()]


def load_dataset_texts(spec: DatasetSpec, error: type[QuantkitError]) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise error('Reading a dataset needs the datasets package: pip install "datasets>=2.14"') from exc
    try:
        data = datasets.load_dataset(spec.name, spec.config, split=spec.split, data_files=spec.data_files)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot read it"
        raise error(
            f"could not load dataset {spec.name!r} split {spec.split!r}: {exc}. Offline, pass a local "
            "dataset (e.g. dataset('text', data_files='file.txt')) or a list of strings."
        ) from exc
    return dataset_texts(data, spec.column, error)


def texts(data: Any, what: str, how_to: str, error: type[QuantkitError]) -> list[str]:
    """``data`` as a list of strings: a path to a text file, a DatasetSpec, a Dataset, or strings.

    A single ``str`` is read as a file path; ``what`` names the argument in error messages.
    """
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise error(f"{what}={str(data)[:80]!r} is not a file. A single string is read as a path "
                        f"to a text file. {how_to}")
        return [path.read_text(encoding="utf-8")]
    if isinstance(data, DatasetSpec):
        return load_dataset_texts(data, error)
    if hasattr(data, "column_names"):  # a datasets.Dataset
        return dataset_texts(data, "text", error)
    if isinstance(data, Sequence) and data and all(isinstance(t, str) for t in data):
        return list(data)
    raise error(f"{what} data of type {type(data).__name__} is not understood. {how_to}")
