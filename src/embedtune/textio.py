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
    """Read the texts of one input; raises ``InputError`` with one line saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        if not corpus.exists():
            raise InputError(f"{path} is a folder without corpus.jsonl; give a BEIR collection folder or a file")
        path = corpus
    elif not path.exists():
        raise InputError(f"input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        result = _read_lines(path)
    elif suffix in (".jsonl", ".ndjson"):
        result = _read_jsonl(path, text_field, id_field)
    elif suffix == ".parquet":
        result = _read_parquet(path, text_field, id_field)
    else:
        raise InputError(f"{path}: unknown input format {suffix or '(none)'}; use one of {', '.join(INPUT_FORMATS)}")
    if not result.texts:
        raise InputError(f"{path} holds no texts to embed")
    if len(set(result.ids)) != len(result.ids):
        raise InputError(f"{path}: ids are not unique; give each text its own id")
    return result


def _read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _lines(text: str) -> list[str]:
    """Lines as files end them (the text was read in universal-newline mode), not at U+2028 and
    the other breaks ``str.splitlines`` also cuts at, which may stand inside a JSON string."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_lines(path: Path) -> Texts:
    ids, texts = [], []
    for number, line in enumerate(_lines(_read_text_file(path)), start=1):
        if line.strip():
            ids.append(str(number))
            texts.append(line)
    return Texts(ids, texts)


def _read_jsonl(path: Path, text_field: str, id_field: str | None) -> Texts:
    ids, texts = [], []
    for number, line in enumerate(_lines(_read_text_file(path)), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or remove that line") from None
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise InputError(f"{path}:{number}: expected an object with a string {text_field!r} field")
        text = row[text_field]
        if row.get("title") and text_field == "text":  # BEIR: title and text embedded together
            text = f"{row['title']} {text}"
        ids.append(_row_id(row, id_field, number, path))
        texts.append(text)
    return Texts(ids, texts)


def _row_id(row: dict, id_field: str | None, number: int, path: Path) -> str:
    for field in (id_field,) if id_field else ("_id", "id"):
        if field in row:
            return str(row[field])
    if id_field:
        raise InputError(f"{path}:{number}: no {id_field!r} field")
    return str(number)


def _read_parquet(path: Path, text_field: str, id_field: str | None) -> Texts:
    pq = require("pyarrow.parquet", "parquet")
    try:
        table = pq.read_table(path)
    except OSError as exc:
        raise InputError(f"cannot read {path} as parquet: {exc}") from None
    if text_field not in table.column_names:
        raise InputError(f"{path} has no {text_field!r} column (columns: {', '.join(table.column_names)})")
    texts = [str(t) if t is not None else "" for t in table.column(text_field).to_pylist()]
    id_column = id_field or next((c for c in ("_id", "id") if c in table.column_names), None)
    if id_column and id_column in table.column_names:
        ids = [str(i) for i in table.column(id_column).to_pylist()]
    elif id_field:
        raise InputError(f"{path} has no {id_field!r} column")
    else:
        ids = [str(i) for i in range(1, len(texts) + 1)]
    return Texts(ids, texts)


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
