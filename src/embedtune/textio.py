"""Reading texts to embed and writing vectors out.

Inputs: ``.txt`` (one text per line), ``.jsonl`` (one object per line with a text field; BEIR
corpora too), ``.parquet`` (an id and a text column), or a BEIR collection folder (its
corpus.jsonl). Outputs: ``.parquet`` with an id column and a fixed-size list of float32, or ``.npy``
with the ids beside it in ``<name>.ids.json``. Outputs are written to a temporary file and renamed,
so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, require

__all__ = ["INPUT_FORMATS", "OUTPUT_FORMATS", "Texts", "read_texts", "read_vectors", "write_vectors"]

INPUT_FORMATS = (".txt", ".jsonl", ".parquet", "a BEIR folder")
OUTPUT_FORMATS = (".parquet", ".npy")


@dataclass(frozen=True)
class Texts:
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def read_texts(path: str | os.PathLike[str], *, text_field: str = "text", id_field: str | None = None) -> Texts:
    """Read the texts of one input; raises ``InputError`` with one line saying what is wrong.

    The documents :func:`~embedtune.documents.read_documents` reads (one reader for ``embed`` and
    ``index``), less a folder of files: a folder here is a BEIR collection."""
    from .documents import read_documents

    path = Path(path)
    if path.is_dir() and not (path / "corpus.jsonl").exists():
        raise InputError(f"{path} is a folder without corpus.jsonl; give a BEIR collection folder or a file")
    suffix = path.suffix.lower()
    if path.is_file() and suffix not in (".txt", ".jsonl", ".ndjson", ".parquet"):
        raise InputError(f"{path}: unknown input format {suffix or '(none)'}; use one of {', '.join(INPUT_FORMATS)}")
    documents = read_documents(path, text_field=text_field, id_field=id_field).documents
    return Texts([document.id for document in documents], [document.text for document in documents])


def write_vectors(path: str | os.PathLike[str], ids: list[str], vectors: np.ndarray, *, model: str) -> list[Path]:
    """Write ids and vectors; returns the files written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InputError(f"{path}: unknown output format {suffix or '(none)'}; use .parquet or .npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".npy":
        with tmp.open("wb") as handle:
            np.save(handle, vectors.astype(np.float32))
        ids_path = path.with_name(path.stem + ".ids.json")
        ids_tmp = ids_path.with_name(f".{ids_path.name}.tmp")
        ids_tmp.write_text(json.dumps({"model": model, "ids": ids}), encoding="utf-8")
        os.replace(ids_tmp, ids_path)
        os.replace(tmp, path)
        return [path, ids_path]
    pa = require("pyarrow", "parquet")
    pq = require("pyarrow.parquet", "parquet")
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table(
        {"id": pa.array(ids, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(flat, dim)},
        metadata={"embedtune.model": model, "embedtune.dim": str(dim)},
    )
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return [path]


def read_vectors(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read back what ``write_vectors`` wrote."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        meta = json.loads(path.with_name(path.stem + ".ids.json").read_text(encoding="utf-8"))
        return meta["ids"], np.load(path)
    pq = require("pyarrow.parquet", "parquet")
    table = pq.read_table(path)
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    return [str(i) for i in table.column("id").to_pylist()], vectors
