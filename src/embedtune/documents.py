"""Reading the documents of a corpus for ``embedtune index``.

:func:`read_documents` takes one input and returns its documents (id, text, metadata) in a fixed
order. The inputs:

- a BEIR collection folder (it holds ``corpus.jsonl``): id ``_id``, text title + " " + text exactly
  as :attr:`~embedtune.evaluation.collections.Document.full_text` (so an index holds what
  ``compare`` evaluated), metadata ``{"title": ...}`` when the title is not empty;
- ``.jsonl`` / ``.ndjson``: one object per line; the id from ``id_field`` (or ``_id``, then ``id``,
  then the line number), the text from ``text_field`` (with a BEIR ``title`` put in front when the
  text field is ``text``, as ``embed`` does); metadata is the row's ``metadata`` object when it has
  one, else its other scalar fields;
- ``.parquet``: the same rules over columns (a ``metadata`` column may be a struct, a map or JSON
  text);
- a single ``.txt``: one document per non-empty line, ids are line numbers (as ``embed`` reads it);
- any other folder: its files, recursively and sorted, hidden files and folders left out. ``.txt``
  and ``.md`` are read as UTF-8, ``.html`` through BeautifulSoup, ``.pdf`` through pypdf. A file's
  id is its path relative to the folder (``/`` separated); its metadata holds that ``path``, its
  ``type`` and the HTML or PDF ``title`` when there is one. A file that cannot be read lands in
  :attr:`DocumentSource.failures` with one line saying why; files of other types are counted in
  :attr:`DocumentSource.skipped`. With ``images=True`` (a model that takes images), image files
  (``IMAGE_SUFFIXES``: .png, .jpg, ...) are documents too: the document carries the
  :class:`~embedtune.images.Image` (the file's bytes, decoded once here to prove they are whole), its
  text is its relative path, its metadata holds ``path``, ``type`` ``"image"``, ``sha256`` of the
  bytes, ``width`` and ``height``. A corrupt, truncated, empty or non-image file lands in
  ``failures`` like any unreadable file.

Anything unusable as a whole (a missing path, an unknown format, a bad JSONL line, a repeated id,
no documents at all) raises :class:`~embedtune.errors.InputError` with one line.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InputError, require
from .evaluation.collections import Document, read_corpus, read_jsonl
from .images import IMAGE_SUFFIXES, Image

__all__ = ["FOLDER_TYPES", "INPUT_FORMATS", "DocumentSource", "SourceDocument", "SourceKind", "read_documents"]

INPUT_FORMATS = ("a BEIR folder", ".jsonl", ".parquet", ".txt", "a folder of .txt/.md/.html/.pdf files")

FOLDER_TYPES: Mapping[str, str] = {
    ".txt": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
"""File suffix (lower case) to the ``type`` a document read from a folder gets in its metadata."""


class SourceKind(str, Enum):
    """What an input was."""

    BEIR = "beir"
    JSONL = "jsonl"
    PARQUET = "parquet"
    FOLDER = "folder"
    TXT = "txt"


@dataclass(frozen=True, kw_only=True)
class SourceDocument:
    """One document to index. ``metadata`` holds JSON values only; ``image`` is set for an image
    document (embedded as the image; ``text`` then names it). ``title`` is the document's title
    apart from its text (which may begin with it, as a BEIR document's does), for a chunker that
    reads it before each passage; empty when the input has none."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    image: Image | None = None
    title: str = ""


@dataclass(frozen=True, kw_only=True)
class DocumentSource:
    """The documents of one input, and what could not be read.

    ``failures`` holds ``(file path, one-line reason)`` for each file of a folder that could not be
    read, and ``failed_ids`` the ids those files would have had (so an update can keep what the
    store holds for them rather than delete it); ``skipped`` counts the files of a folder whose type
    is not read (see ``FOLDER_TYPES``).
    """

    path: Path
    kind: SourceKind
    documents: list[SourceDocument]
    failures: list[tuple[str, str]] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.documents)


def read_documents(
    path: str | os.PathLike[str], *, text_field: str = "text", id_field: str | None = None, images: bool = False
) -> DocumentSource:
    """Read the documents of ``path``: a BEIR folder, ``.jsonl``, ``.parquet``, ``.txt`` or a folder of files.

    ``text_field`` and ``id_field`` name the text and id of a JSONL line or parquet row; the other
    inputs ignore them. ``images`` reads the image files of a folder as image documents (else they
    are skipped like other types). Raises ``InputError`` with one line when the input as a whole is unusable;
    a single unreadable file in a folder is reported in ``failures`` instead.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            source = _read_beir(path)
        else:
            source = _read_folder(path, images=images)
    elif not path.exists():
        raise InputError(f"input {path} does not exist; give one of: {', '.join(INPUT_FORMATS)}")
    else:
        suffix = path.suffix.lower()
        if suffix == ".txt":
            source = _read_txt(path)
        elif suffix in (".jsonl", ".ndjson"):
            source = _read_jsonl(path, text_field, id_field)
        elif suffix == ".parquet":
            source = _read_parquet(path, text_field, id_field)
        else:
            raise InputError(
                f"{path}: cannot index a {suffix or 'suffix-less'} file; give one of: {', '.join(INPUT_FORMATS)}"
                + (" (put single .md/.html/.pdf files in a folder)" if suffix in FOLDER_TYPES else "")
            )
    if not source.documents and not source.failures:
        what = " of a type that is read" if source.kind is SourceKind.FOLDER else ""
        skipped = f" ({source.skipped} file(s) of other types skipped)" if source.skipped else ""
        raise InputError(f"{path} holds no documents{what}{skipped}; give an input with at least one")
    return source


# --- BEIR folders and single .txt files: the readers that `compare` and `embed` use ---------------


def _read_beir(folder: Path) -> DocumentSource:
    corpus = read_corpus(folder)  # a bad line or byte is one InputError naming it
    return DocumentSource(path=folder, kind=SourceKind.BEIR, documents=corpus_documents(corpus))


def corpus_documents(corpus: Mapping[str, Document]) -> list[SourceDocument]:
    """A BEIR corpus as ``index`` reads it and ``compare`` builds it: title + " " + text, the title as metadata.

    An image collection's documents carry their image, with the metadata a folder's image gets.
    """
    return [
        _image_document(doc_id, doc.image)
        if doc.image is not None
        else SourceDocument(
            id=doc_id, text=doc.full_text, metadata={"title": doc.title} if doc.title else {}, title=doc.title
        )
        for doc_id, doc in corpus.items()
    ]


def _image_document(doc_id: str, image: Image, size: tuple[int, int] | None = None) -> SourceDocument:
    """An image as a document: its id as text, what names it as metadata (the hash makes a changed file new)."""
    width, height = size or image.size
    metadata = {"path": doc_id, "type": "image", "sha256": image.sha256, "width": width, "height": height}
    return SourceDocument(id=doc_id, text=doc_id, metadata=metadata, image=image)


def _read_txt(path: Path) -> DocumentSource:
    """One document a non-blank line, its line number its id."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    # Lines as files end them (read in universal-newline mode), not at U+2028 and the other breaks
    # ``str.splitlines`` also cuts at.
    documents = [
        SourceDocument(id=str(number), text=line)
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    return DocumentSource(path=path, kind=SourceKind.TXT, documents=documents)


# --- JSONL and parquet: one row per document ----------------------------------------------------


def _read_jsonl(path: Path, text_field: str, id_field: str | None) -> DocumentSource:
    documents = [
        _row_document(row, f"{path}:{number}", number, text_field, id_field) for number, row in read_jsonl(path)
    ]
    _check_unique(path, documents, "line")
    return DocumentSource(path=path, kind=SourceKind.JSONL, documents=documents)


def _read_parquet(path: Path, text_field: str, id_field: str | None) -> DocumentSource:
    pa = require("pyarrow", "parquet")
    pq = require("pyarrow.parquet", "parquet")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path} as parquet: {_one_line(exc)}") from None
    names = table.column_names
    for wanted, what in ((text_field, "text"), (id_field, "id")):
        if wanted is not None and wanted not in names:
            raise InputError(f"{path} has no {what} column {wanted!r} (columns: {', '.join(names)})")
    text_type = table.schema.field(text_field).type
    if _value_type(pa, text_type) not in (pa.string(), pa.large_string()):
        raise InputError(f"{path}: column {text_field!r} holds {text_type}, not text; name the text column")
    kept = [
        name
        for name in names
        if name in (text_field, id_field, "_id", "id", "metadata") or _is_scalar(pa, table.schema.field(name).type)
    ]
    columns = {name: [_plain(value) for value in table.column(name).to_pylist()] for name in kept}
    if "metadata" in columns:
        is_map = pa.types.is_map(table.schema.field("metadata").type)
        columns["metadata"] = [
            _metadata_cell(value, is_map, f"{path} row {number}") for number, value in enumerate(columns["metadata"], 1)
        ]
    columns[text_field] = ["" if text is None else text for text in columns[text_field]]
    documents = []
    for index in range(table.num_rows):
        row = {name: values[index] for name, values in columns.items()}
        documents.append(_row_document(row, f"{path} row {index + 1}", index + 1, text_field, id_field))
    _check_unique(path, documents, "row")
    return DocumentSource(path=path, kind=SourceKind.PARQUET, documents=documents)


_SCALAR_CHECKS = (
    "is_string", "is_large_string", "is_integer", "is_floating", "is_boolean", "is_null", "is_decimal",
    "is_timestamp", "is_date", "is_time",
)  # fmt: skip


def _value_type(pa: Any, arrow_type: Any) -> Any:
    """The type of a column's values, looking through dictionary encoding (pandas categories)."""
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


def _is_scalar(pa: Any, arrow_type: Any) -> bool:
    """Whether a parquet column holds values that become one JSON scalar each."""
    return any(getattr(pa.types, check)(_value_type(pa, arrow_type)) for check in _SCALAR_CHECKS)


def _plain(value: Any) -> Any:
    """A parquet value as JSON: times as ISO 8601 text, decimals as text, NaN and infinity as null."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _metadata_cell(value: Any, is_map: bool, where: str) -> dict[str, Any]:
    """A parquet ``metadata`` cell as a dict: a struct, a map (key/value pairs) or JSON object text."""
    if value is None:
        return {}
    if is_map:
        return {str(key): item for key, item in value}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise InputError(f"{where}: 'metadata' is not an object; give a struct, a map or JSON object text")
    return value


def _row_document(
    row: dict[str, Any], where: str, number: int, text_field: str, id_field: str | None
) -> SourceDocument:
    """One document from a JSONL line or parquet row; ``where`` names the line or row in errors."""
    text = row.get(text_field)
    if not isinstance(text, str):
        raise InputError(f"{where}: expected a string {text_field!r} field")
    used = {text_field}
    title = row.get("title") if text_field == "text" else None
    if text_field == "text":  # BEIR: the title goes in front of the text
        if isinstance(title, str) and title:
            text = " ".join(part for part in (title, text) if part)
        used.add("title")
    doc_id, id_key = _row_id(row, where, number, id_field)
    used.add(id_key)
    title = title if isinstance(title, str) else ""
    return SourceDocument(id=doc_id, text=text, metadata=_row_metadata(row, where, used), title=title)


def _row_id(row: Mapping[str, Any], where: str, number: int, id_field: str | None) -> tuple[str, str]:
    """The row's id and the field it came from (``""`` for the line number), in textio's order."""
    for key in (id_field,) if id_field else ("_id", "id"):
        if key in row:
            value = row[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise InputError(f"{where}: id {key!r} is {value!r}; give a non-empty string or integer")
            return str(value), key
    if id_field:
        raise InputError(f"{where}: no {id_field!r} field")
    return str(number), ""


def _row_metadata(row: Mapping[str, Any], where: str, used: set[str]) -> dict[str, Any]:
    """The row's ``metadata`` object if it has one, else its other scalar fields."""
    metadata = row.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InputError(f"{where}: 'metadata' is {type(metadata).__name__}, not an object; make it an object")
        return dict(metadata)
    return {
        key: _plain(value)
        for key, value in row.items()
        if key not in used and key != "metadata" and (value is None or isinstance(value, (str, int, float, bool)))
    }


def _check_unique(path: Path, documents: list[SourceDocument], unit: str) -> None:
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise InputError(f"{path}: id {document.id!r} appears more than once; give each {unit} its own id")
        seen.add(document.id)


# --- folders of files ---------------------------------------------------------------------------


class _Unreadable(Exception):
    """One file of a folder cannot be read; the message is the one-line reason."""


def _read_folder(folder: Path, *, images: bool = False) -> DocumentSource:
    documents: list[SourceDocument] = []
    failures: list[tuple[str, str]] = []
    failed_ids: list[str] = []
    skipped = 0
    for relative in _visible_files(folder, failures):
        file_type = FOLDER_TYPES.get(relative.suffix.lower())
        if images and relative.suffix.lower() in IMAGE_SUFFIXES:
            file = folder.joinpath(*relative.parts)
            try:
                documents.append(_read_image(file, str(relative)))
            except _Unreadable as exc:
                failures.append((str(file), str(exc)))
                failed_ids.append(str(relative))
            continue
        if file_type is None:
            skipped += 1
            continue
        file = folder.joinpath(*relative.parts)
        try:
            text, title = _read_file(file, file_type)
        except _Unreadable as exc:
            failures.append((str(file), str(exc)))
            failed_ids.append(str(relative))
            continue
        metadata: dict[str, Any] = {"path": str(relative), "type": file_type}
        if title:
            metadata["title"] = title
        documents.append(SourceDocument(id=str(relative), text=text, metadata=metadata, title=title or ""))
    return DocumentSource(
        path=folder,
        kind=SourceKind.FOLDER,
        documents=documents,
        failures=failures,
        failed_ids=failed_ids,
        skipped=skipped,
    )


def _visible_files(folder: Path, failures: list[tuple[str, str]]) -> list[PurePosixPath]:
    """Every file under ``folder`` that is not hidden and not in a hidden folder, sorted.

    A folder that cannot be listed is added to ``failures``.
    """

    def listing_failed(exc: OSError) -> None:
        failures.append((str(exc.filename), f"a folder that cannot be listed ({exc.strerror or exc})"))

    found: list[PurePosixPath] = []
    for root, dirs, files in os.walk(folder, onerror=listing_failed):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        base = PurePosixPath(Path(root).relative_to(folder).as_posix())
        found.extend(base / name for name in files if not name.startswith("."))
    return sorted(found, key=str)


def _read_file(file: Path, file_type: str) -> tuple[str, str | None]:
    """``(text, title or None)`` of one file; raises ``_Unreadable`` with the reason."""
    if not file.is_file():
        raise _Unreadable("not a regular file (a broken link?); remove it or point it at a file")
    text, title = _READERS[file_type](file)
    if not text.strip():
        raise _Unreadable("no text: the file is empty or holds nothing but whitespace or markup")
    return text, title


def _read_image(file: Path, doc_id: str) -> SourceDocument:
    """An image file as a document, decoded once so a broken file is named here, not mid-run."""
    if not file.is_file():
        raise _Unreadable("not a regular file (a broken link?); remove it or point it at a file")
    image = Image(_read_bytes(file), name=str(file))
    try:
        size = image.check()
    except InputError as exc:
        raise _Unreadable(str(exc).removeprefix(f"{file}: ")) from None
    return _image_document(doc_id, image, size)


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None


def _plain_text(file: Path) -> tuple[str, str | None]:
    """A text or Markdown file as it is (UTF-8; a byte-order mark dropped, line ends made ``\\n``)."""
    data = _read_bytes(file)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n"), None


# HTML: blocks become paragraphs (a blank line around each), these end a line, cells stay on their row.
_HTML_DROPPED = ("script", "style", "noscript", "template", "title")
_HTML_BLOCKS = (
    "address", "article", "aside", "blockquote", "details", "dialog", "div", "dl", "fieldset", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p",
    "pre", "section", "summary", "table", "ul",
)  # fmt: skip
_HTML_LINES = ("br", "caption", "dd", "dt", "li", "tr")
_HTML_CELLS = ("td", "th")
_WHITESPACE = re.compile(r"\s+")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _html_text(file: Path) -> tuple[str, str | None]:
    """The visible text of an HTML page (scripts and styles removed, blocks on their own lines) and its title."""
    bs4 = require("bs4", "files")
    try:
        soup = bs4.BeautifulSoup(_read_bytes(file), "html.parser")
    except bs4.ParserRejectedMarkup as exc:
        raise _Unreadable(f"not readable as HTML ({_one_line(exc)})") from None
    title = _one_line(soup.title.get_text()) if soup.title else ""
    for tag in soup.find_all(_HTML_DROPPED):
        tag.decompose()
    for string in soup.find_all(string=True):
        if type(string) is bs4.NavigableString and not string.find_parent("pre"):
            string.replace_with(_WHITESPACE.sub(" ", string))
    for tag in soup.find_all(_HTML_CELLS):
        tag.insert_after(" ")
    for tag in soup.find_all(_HTML_LINES):
        tag.insert_after("\n")
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    lines = (_SPACES.sub(" ", line).strip() for line in soup.get_text().splitlines())
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return text, title or None


def _pdf_text(file: Path) -> tuple[str, str | None]:
    """The text layer of a PDF, pages joined by a blank line, and its title."""
    pypdf = require("pypdf", "files")
    # pypdf raises these on damaged files, beyond its own errors
    damaged = (pypdf.errors.PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, zlib.error)
    try:
        reader = pypdf.PdfReader(file)
        if reader.is_encrypted and not reader.decrypt(""):
            raise _Unreadable("encrypted with a password; save a decrypted copy (e.g. qpdf --decrypt) and index that")
        if not reader.pages:
            raise _Unreadable("no pages")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata
        title = _one_line(str(info.title)) if info is not None and info.title else ""
    except pypdf.errors.DependencyError as exc:
        raise _Unreadable(f"cannot decrypt it ({_one_line(exc)})") from None
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None
    except damaged as exc:
        raise _Unreadable(
            f"not a readable PDF ({type(exc).__name__}: {_one_line(exc)}); repair or re-export it"
        ) from None
    text = "\n\n".join(page for page in pages if page)
    if not text:
        raise _Unreadable("no text layer: scanned? run OCR first (e.g. ocrmypdf) and index the result")
    return text, title or None


_READERS: dict[str, Callable[[Path], tuple[str, str | None]]] = {
    "txt": _plain_text,
    "md": _plain_text,
    "html": _html_text,
    "pdf": _pdf_text,
}
"""``FOLDER_TYPES`` value to the function that returns a file's ``(text, title or None)``."""


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
