"""Reading the manifest and ids that every saved index folder holds, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from embedtune.errors import InputError

__all__ = ["read_manifest"]

MANIFEST = "manifest.json"
IDS = "ids.json"


def read_manifest(folder: Path, *, fmt: str, version: int, what: str, files: tuple[str, ...] = ()) -> tuple[dict, list]:
    """``(manifest, ids)`` of a saved index of format ``fmt``; ``what`` names it in messages."""
    for name in (MANIFEST, IDS, *files):
        if not (folder / name).is_file():
            raise InputError(f"{folder / name} is missing; {folder} is not a saved {what}")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        ids = json.loads((folder / IDS).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{folder} holds a broken manifest.json or ids.json ({exc.msg}); rebuild the index") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise InputError(f"{folder / MANIFEST} is not an embedtune {what} manifest; rebuild the index")
    if manifest.get("version") != version:
        raise InputError(
            f"{folder} holds {what} version {manifest.get('version')}; this embedtune reads "
            f"version {version}; rebuild the index"
        )
    return manifest, ids
