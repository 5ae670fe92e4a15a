"""Test collections in the BEIR layout: load them, check them, download them.

A BEIR folder holds ``corpus.jsonl`` (one ``{"_id", "title", "text"}`` per line),
``queries.jsonl`` (one ``{"_id", "text"}`` per line) and ``qrels/<split>.tsv`` (a header
``query-id<TAB>corpus-id<TAB>score``, then one judgment per line). See Thakur et al., "BEIR: A
Heterogeneous Benchmark for Zero-shot Evaluation of Information Retrieval Models", NeurIPS 2021.

Which queries are loaded: every query of ``queries.jsonl``. Some folders also carry
``queries_all.jsonl`` (every query of the source, judged or not); when the loaded qrels judge a
query that ``queries.jsonl`` lacks (SciFact's train queries), its text is taken from there, and
nothing else is read from that file.

An image collection has the same layout with an ``images/`` folder in place of ``corpus.jsonl``:
each image file under it (``.png``, ``.jpg``, ...) is a document whose id is its path relative to
``images/`` (``cats/tabby.jpg``), and ``qrels/<split>.tsv`` names documents by those ids. Its
queries are texts, searched against the images by a model that puts both in one space (CLIP). An
image that cannot be decoded is a problem of content, like a duplicate id.

Checks: broken files (a required file missing, a line that is not a JSON object, a row of qrels that
is not three columns with an integer score) always raise :class:`~embedtune.errors.InputError`.
Problems of content (duplicate document or query ids, empty query texts, judgments naming
unknown queries or documents, repeated judgments) are gathered first; with ``strict=True`` (the
default) they raise one ``InputError`` line that counts each kind and names an example. With
``strict=False`` the collection is repaired (the first of duplicate ids wins, empty queries and
judgments naming unknown ids are dropped, the last of repeated judgments wins) and each problem
is described in ``Collection.problems``.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embedtune.errors import InputError
from embedtune.images import Image

__all__ = ["BEIR_URL", "Collection", "Document", "Qrels", "download_beir", "load_beir", "read_corpus", "read_jsonl"]

Qrels = dict[str, dict[str, int]]
"""Judgments in TREC shape: ``{query_id: {doc_id: relevance}}``."""

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

_QRELS_HEADER = ("query-id", "corpus-id", "score")

IMAGES_FOLDER = "images"
"""An image collection holds this folder in place of ``corpus.jsonl`` (see the module docstring)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Document:
    """One document of a corpus; ``image`` is set in an image collection (see :func:`load_images`)."""

    title: str
    text: str
    image: Image | None = None

    @property
    def full_text(self) -> str:
        """Title and text joined by one space (either may be empty), as BEIR indexes them."""
        return " ".join(part for part in (self.title, self.text) if part)


@dataclass(frozen=True, kw_only=True)
class Collection:
    """A retrieval test collection: documents, queries and judgments per split.

    ``qrels`` maps a split name (``"test"``, ``"train"``, ...) to judgments in TREC shape.
    ``problems`` lists what was repaired when the collection was loaded with ``strict=False``.
    """

    name: str
    corpus: Mapping[str, Document]
    queries: Mapping[str, str]
    qrels: Mapping[str, Qrels]
    problems: tuple[str, ...] = field(default=())

    def documents_text(self, doc_id: str) -> str:
        """The text to index for one document: title, one space, text (see ``Document.full_text``)."""
        return self.corpus[doc_id].full_text

    def split(self, name: str) -> tuple[dict[str, str], Qrels]:
        """The queries judged in split ``name`` and that split's judgments."""
        if name not in self.qrels:
            known = ", ".join(sorted(self.qrels)) or "none"
            raise InputError(f"collection {self.name!r} has no split {name!r}; its splits: {known}")
        qrels = self.qrels[name]
        return {qid: self.queries[qid] for qid in qrels}, qrels

    def unseen_queries(self, split: str = "test", seen: str = "train") -> list[str]:
        """The queries of ``split`` none of whose relevant documents split ``seen`` judges relevant.

        A model trained on ``seen``'s labels can learn which documents get cited; on these queries
        that knowledge does not help, so a gain here is a gain that generalises.
        """
        _, qrels = self.split(split)
        _, seen_qrels = self.split(seen)
        known = {doc for rels in seen_qrels.values() for doc, grade in rels.items() if grade > 0}
        return [qid for qid, rels in qrels.items() if not {doc for doc, grade in rels.items() if grade > 0} & known]


def load_beir(path: str | Path, *, splits: Sequence[str] | None = None, strict: bool = True) -> Collection:
    """Read a collection in the BEIR layout from folder ``path``.

    ``splits`` names the qrels files to read (``["test"]`` reads ``qrels/test.tsv``); ``None``
    reads every ``qrels/*.tsv``. See the module docstring for the checks and for ``strict``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(
            f"collection folder {folder} does not exist; pass a folder in the BEIR layout "
            "(corpus.jsonl, queries.jsonl, qrels/*.tsv) or fetch one with download_beir()"
        )
    problems: list[str] = []

    if not (folder / "corpus.jsonl").exists() and (folder / IMAGES_FOLDER).is_dir():
        corpus, duplicates = _read_images(folder / IMAGES_FOLDER, problems), list[str]()
    else:
        corpus, duplicates = _read_corpus(_required(folder, "corpus.jsonl"))
    if duplicates:
        problems.append(
            f"corpus.jsonl repeats {len(duplicates)} document id(s) (first: {duplicates[0]!r}); "
            "make document ids unique"
        )

    qrels_by_split = {
        split: _read_qrels(qrels_file, problems) for split, qrels_file in _qrels_files(folder, splits).items()
    }

    queries = _read_queries(folder / "queries.jsonl", problems, required=True)
    judged = {qid for qrels in qrels_by_split.values() for qid in qrels}
    missing = judged - queries.keys()
    all_queries_file = folder / "queries_all.jsonl"
    if missing and all_queries_file.is_file():
        all_queries = _read_queries(all_queries_file, [], required=False)
        queries.update({qid: all_queries[qid] for qid in sorted(missing) if qid in all_queries})

    empty = [qid for qid, text in queries.items() if not text.strip()]
    if empty:
        problems.append(
            f"{len(empty)} query text(s) are empty (ids: {_examples(empty)}); "
            "give each query a text or remove it (their judgments go with them)"
        )
        for qid in empty:
            del queries[qid]

    for split, qrels in qrels_by_split.items():
        for qid in empty:
            qrels.pop(qid, None)
        _drop_unknown(split, qrels, queries, corpus, problems)

    if problems and strict:
        raise InputError(
            f"collection {folder} has problems: "
            + "; ".join(problems)
            + " (or load it with strict=False to repair it and list them in .problems)"
        )
    return Collection(
        name=folder.name,
        corpus=corpus,
        queries=queries,
        qrels=qrels_by_split,
        problems=tuple(problems),
    )


def _read_images(folder: Path, problems: list[str]) -> dict[str, Document]:
    """The image files under ``folder`` as documents, their ids their paths relative to it (``/``
    separated, suffix kept); a file that is not a whole image is left out and named in ``problems``."""
    from embedtune.images import IMAGE_SUFFIXES

    corpus: dict[str, Document] = {}
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        doc_id = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in doc_id.split("/")):
            continue
        image = Image.from_file(path, name=f"{IMAGES_FOLDER}/{doc_id}")
        try:
            image.check()
        except InputError as exc:
            problems.append(str(exc))
            continue
        corpus[doc_id] = Document(title="", text=doc_id, image=image)
    if not corpus:
        raise InputError(f"{folder} holds no readable images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return corpus


def download_beir(name: str, dest: str | Path, *, timeout: float = 60.0) -> Path:
    """Download and unpack BEIR collection ``name`` into ``dest/name``; return that folder.

    Fetches ``BEIR_URL`` (the public BEIR mirror at TU Darmstadt) over the network; a folder that
    already holds ``corpus.jsonl`` is returned as it is. Online use only: nothing calls this at
    import or in tests.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"{name!r} is not a BEIR collection name; use one like 'scifact' or 'nfcorpus'")
    dest = Path(dest)
    target = dest / name
    if (target / "corpus.jsonl").is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    url = BEIR_URL.format(name=name)
    archive = dest / f"{name}.zip"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, TimeoutError) as exc:
        archive.unlink(missing_ok=True)
        raise InputError(
            f"could not download {url}: {exc}; check the name and your connection, "
            "or download the zip by hand and unpack it into a folder"
        ) from exc
    try:
        with zipfile.ZipFile(archive) as zipped:
            root = dest.resolve()
            for member in zipped.namelist():
                if not (dest / member).resolve().is_relative_to(root):
                    raise InputError(f"{url} holds a path outside its folder ({member!r}); not unpacked")
            zipped.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive} is not a zip archive; delete it and download again") from exc
    finally:
        archive.unlink(missing_ok=True)
    return target


def _required(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise InputError(f"{path} is missing; a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    return path


def read_corpus(path: str | Path) -> dict[str, Document]:
    """The documents of a BEIR ``corpus.jsonl`` (or of a folder holding one), for a corpus without
    queries or labels; a repeated id keeps its first document."""
    path = Path(path)
    file = path / "corpus.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{file} does not exist; give a corpus.jsonl or a folder holding one")
    corpus, _ = _read_corpus(file)
    if not corpus:
        raise InputError(f"{file} holds no documents")
    return corpus


def _read_corpus(path: Path) -> tuple[dict[str, Document], list[str]]:
    """Documents by id, and the ids seen again after their first line (those lines are skipped)."""
    corpus: dict[str, Document] = {}
    duplicates: list[str] = []
    for line_no, row in read_jsonl(path):
        doc_id = _field(row, "_id", path, line_no)
        if doc_id in corpus:
            duplicates.append(doc_id)
            continue
        corpus[doc_id] = Document(title=_text(row, "title", path, line_no), text=_text(row, "text", path, line_no))
    return corpus, duplicates


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file (UTF-8, a leading BOM
    allowed, read as it streams); one clear line for a bad line or an unreadable file."""
    try:
        with path.open("rb") as lines:
            for line_no, raw in enumerate(lines, start=1):
                try:
                    line = raw.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{path}:{line_no}: not UTF-8 text (byte {exc.start}); convert the file to UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{line_no}: not valid JSON ({exc.msg}); fix or remove that line") from None
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{line_no}: not a JSON object; each line must be one object")
                yield line_no, row
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _field(row: dict, key: str, path: Path, line_no: int) -> str:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise InputError(f"{path} line {line_no} has no {key!r}; every line needs a string {key!r}")
    return str(value)


def _text(row: dict, key: str, path: Path, line_no: int) -> str:
    value = row.get(key) or ""
    if not isinstance(value, str):
        raise InputError(f"{path} line {line_no}: {key!r} is not a string")
    return value


def _read_queries(path: Path, problems: list[str], *, required: bool) -> dict[str, str]:
    if required:
        _required(path.parent, path.name)
    queries: dict[str, str] = {}
    duplicates: list[str] = []
    for line_no, row in read_jsonl(path):
        qid = _field(row, "_id", path, line_no)
        if qid in queries:
            duplicates.append(qid)
            continue
        queries[qid] = _text(row, "text", path, line_no)
    if duplicates:
        problems.append(
            f"{path.name} repeats {len(duplicates)} query id(s) (first: {duplicates[0]!r}); make query ids unique"
        )
    return queries


def _qrels_files(folder: Path, splits: Sequence[str] | None) -> dict[str, Path]:
    qrels_folder = folder / "qrels"
    if not qrels_folder.is_dir():
        raise InputError(f"{qrels_folder} is missing; a BEIR folder needs qrels/<split>.tsv files")
    found = {path.stem: path for path in sorted(qrels_folder.glob("*.tsv"))}
    if splits is None:
        if not found:
            raise InputError(f"{qrels_folder} holds no .tsv file; add qrels/test.tsv")
        return found
    if isinstance(splits, str):
        raise TypeError("splits must be a sequence of names, e.g. ['test'], not a string")
    for split in splits:
        if split not in found:
            known = ", ".join(found) or "none"
            raise InputError(f"{qrels_folder / (split + '.tsv')} is missing; splits found: {known}")
    return {split: found[split] for split in splits}


def _read_qrels(path: Path, problems: list[str]) -> Qrels:
    qrels: Qrels = {}
    repeated: list[tuple[str, str]] = []
    with path.open(encoding="utf-8", newline="") as lines:
        for line_no, row in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if line_no == 1 and tuple(cell.strip() for cell in row) == _QRELS_HEADER:
                continue
            if len(row) != 3:
                raise InputError(
                    f"{path} line {line_no} has {len(row)} column(s); expected query-id<TAB>corpus-id<TAB>score"
                )
            qid, doc_id, score = (cell.strip() for cell in row)
            try:
                relevance = int(score)
            except ValueError as exc:
                raise InputError(f"{path} line {line_no}: score {score!r} is not an integer") from exc
            judged = qrels.setdefault(qid, {})
            if doc_id in judged:
                repeated.append((qid, doc_id))
            judged[doc_id] = relevance
    if repeated:
        qid, doc_id = repeated[0]
        problems.append(
            f"qrels/{path.name} judges {len(repeated)} (query, document) pair(s) twice "
            f"(first: {qid!r}, {doc_id!r}); keep one judgment per pair"
        )
    return qrels


def _drop_unknown(
    split: str,
    qrels: Qrels,
    queries: Mapping[str, str],
    corpus: Mapping[str, Document],
    problems: list[str],
) -> None:
    unknown_queries = [qid for qid in qrels if qid not in queries]
    if unknown_queries:
        count = sum(len(qrels[qid]) for qid in unknown_queries)
        problems.append(
            f"qrels/{split}.tsv has {count} judgment(s) for {len(unknown_queries)} query id(s) "
            f"missing from queries.jsonl (ids: {_examples(unknown_queries)})"
        )
        for qid in unknown_queries:
            del qrels[qid]
    unknown_docs = sorted({doc for judged in qrels.values() for doc in judged if doc not in corpus})
    if unknown_docs:
        count = 0
        for qid in list(qrels):
            for doc in [doc for doc in qrels[qid] if doc not in corpus]:
                del qrels[qid][doc]
                count += 1
            if not qrels[qid]:
                del qrels[qid]
        problems.append(
            f"qrels/{split}.tsv has {count} judgment(s) naming {len(unknown_docs)} document id(s) "
            f"missing from corpus.jsonl (ids: {_examples(unknown_docs)})"
        )


def _examples(ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
