"""Writing a checkpoint folder safely: into a temporary folder that is renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from quantkit.errors import SaveError
from quantkit.formats import pickle_files

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json", "chat_template.jinja",
)


def check_target(folder: Path, protected: list[Path], overwrite: bool) -> None:
    """Refuse a target that is a model's own source folder, or non-empty without ``overwrite``."""
    target = folder.resolve()
    for source in protected:
        source = source.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise SaveError(
                f"Refusing to save into {str(folder)!r}: it is (or contains, or lies inside) the "
                f"folder the model was loaded from ({source}). Choose another output folder."
            )
    if folder.exists() and not folder.is_dir():
        raise SaveError(f"{str(folder)!r} exists and is a file, not a folder; choose another path.")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise SaveError(
            f"{str(folder)!r} is not empty; nothing was written. Pass overwrite=True to replace "
            "its contents, or choose an empty or new folder."
        )


def write_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh temporary folder beside ``folder``, then swap it in.

    If ``write`` fails, or leaves a pickle file, nothing at ``folder`` changes.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        write(tmp)
        pickles = pickle_files(tmp)
        if pickles:
            raise SaveError(f"the backend wrote pickle files {pickles}; quantkit saves safetensors only")
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            old.rmdir()
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with suppress(OSError):
            shutil.rmtree(tmp)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(name, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(name)
        raise


def copy_tokenizer_files(source: Path | None, folder: Path) -> None:
    """Copy the tokenizer files of the source model folder, when there is one."""
    if source is None or not source.is_dir():
        return
    for name in TOKENIZER_FILES:
        if (source / name).is_file() and not (folder / name).exists():
            shutil.copy2(source / name, folder / name)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
