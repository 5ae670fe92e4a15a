"""Folders named in a file (a strategy or ensemble file, ``embedtune.toml``): a relative one is
relative to the file's own folder, so a file moved together with its models still finds them.

Read, such a path becomes absolute; written, a path the program holds relative to the working
directory is put relative to the file's folder. Absolute paths (and ``~``) stay as they are. A
model URI names a folder when it is a ``local:`` or ``sparse:`` one whose name is a path (it
starts with ``.``, ``/`` or ``~``, or holds a slash), not a catalogued name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["map_model_folder", "path_for_file", "path_in_file"]

_FOLDER_PROVIDERS = ("local", "sparse")


def path_in_file(text: str, folder: Path) -> str:
    """``text`` read from a file in ``folder``, as an absolute path."""
    path = Path(text).expanduser()
    return text if path.is_absolute() else os.path.normpath(Path(folder).absolute() / path)


def path_for_file(text: str, folder: Path) -> str:
    """``text`` (relative to the working directory) as a file in ``folder`` writes it."""
    path = Path(text).expanduser()
    if text.startswith("~") or path.is_absolute():
        return text
    return os.path.relpath(path.absolute(), Path(folder).absolute())


def map_model_folder(uri: str, change: Callable[[str], str]) -> str:
    """``uri`` with ``change`` applied to the folder it names; any other URI as it is."""
    provider, sep, name = uri.partition(":")
    if not sep or provider not in _FOLDER_PROVIDERS or not _is_path(name):
        return uri
    changed = change(name)
    if not changed.startswith((".", "/", "~")):
        changed = f".{os.sep}{changed}"  # still a path to the URI's reader, not a catalogue name
    return f"{provider}:{changed}"


def _is_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "/" in name or os.sep in name
