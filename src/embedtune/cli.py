"""The ``embedtune`` command. Thin: each command imports what it needs when it runs.

Errors a user can fix (``EmbedtuneError``) print one line and exit with status 2; nothing that was
already embedded is lost, because the cache keeps it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from .errors import EmbedtuneError

if TYPE_CHECKING:
    from .images import Image

app = typer.Typer(
    help="Find, build and prove the best embedding strategy for your retrieval corpus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Time embedding strategies against each other.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
shards_app = typer.Typer(help="Spread a PostgreSQL store over several databases.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")

# Piped into a file or a CI log, rich would assume 80 columns and squeeze the tables unreadable.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Model URI (local:all-MiniLM-L6-v2) or a configured name.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML file of named embedders, one embedders.NAME table each (default: ./embedtune.toml if present).",
    ),
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Embed on a Ray cluster: alone or 'auto' starts a local one; ray://host:10001 or host:6379 joins one.",
    ),
]


def _ray(address: str | None):
    from .engine.ray import RayOptions

    return None if address is None else RayOptions(address=address)


def default_home() -> Path:
    """Where embedtune keeps its cache: ``EMBEDTUNE_HOME``, else the user's cache folder."""
    home = os.environ.get("EMBEDTUNE_HOME")
    if home:
        return Path(home)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedtune"


def _progress(label: str):
    """The progress bar every long command shows on stderr; ``label`` may use ``{task.description}``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def _spec(model: str, config: Path | None, **overrides):
    from dataclasses import replace

    from .factory import load_config, resolve_spec

    if config is None and Path("embedtune.toml").exists():
        config = Path("embedtune.toml")
    spec = resolve_spec(model, load_config(config) if config else None)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(spec, **changes) if changes else spec


@app.command()
def models() -> None:
    """List the known models and whether this machine can run each without a network."""
    from rich.table import Table

    from .catalogue import CATALOGUE

    table = Table(title="embedtune model catalogue")
    table.add_column("model", no_wrap=True)
    for column in ("dims", "max tokens", "$ / 1M tokens"):
        table.add_column(column, justify="right")
    for column in ("inputs", "prefixes (query | document)", "licence", "offline here"):
        table.add_column(column)
    for card in CATALOGUE:
        prefixes = " | ".join(_short(p) for p in (card.query_prefix, card.document_prefix))
        price = f"{card.usd_per_million_tokens:.2f}" if card.usd_per_million_tokens is not None else "-"
        offline = "yes" if card.available_offline() else "no"
        inputs = " + ".join(card.modalities)
        table.add_row(card.uri, str(card.dim), str(card.max_tokens), price, inputs, prefixes, card.licence, offline)
    out.print(table)
    out.print(
        "Any sentence-transformers folder works too, and a static model from embedtune distill: --model local:/path/to/model"
    )
    out.print("A CLIP-style folder embeds images as well as text: --model local:/path/to/clip-ViT-B-32")
    out.print(
        "A sparse: model (SPLADE; dims = its vocabulary) serves a strategy's \\[sparse] table with mode = 'sparse', "
        "and compare --models sparse:splade-tiny; any SparseEncoder folder: sparse:/path/to/folder"
    )


def _short(prefix: str) -> str:
    if not prefix:
        return "-"
    return repr(prefix) if len(prefix) <= 20 else repr(prefix[:16] + "…")


@app.command()
def embed(
    input: Annotated[
        Path,
        typer.Argument(
            help="A .txt (one text per line), .jsonl, .parquet file, a BEIR folder, or a folder of files "
            "(.txt/.md/.html/.pdf, and images for a model that takes them)."
        ),
    ],
    model: ModelOption = "local:all-MiniLM-L6-v2",
    output: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write ids and vectors: .parquet or .npy.")
    ] = Path("embeddings.parquet"),
    kind: Annotated[str, typer.Option(help="Embed the texts as 'document' or 'query'.")] = "document",
    over_limit: Annotated[
        str | None, typer.Option(help="Texts over the model's limit: error, truncate or split.")
    ] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most texts per model call.")] = None,
    max_batch_tokens: Annotated[int | None, typer.Option(help="Most tokens per model call.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Model calls in flight at once (HTTP providers).")] = None,
    text_field: Annotated[str, typer.Option(help="The text field of .jsonl / .parquet input.")] = "text",
    id_field: Annotated[
        str | None, typer.Option(help="The id field (default: _id or id, else the line number).")
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Embedding cache file (default: in EMBEDTUNE_HOME).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Embed everything afresh and store nothing.")] = False,
    config: ConfigOption = None,
    ray: RayOption = None,
) -> None:
    """Embed texts (and the images of a folder) and write their vectors; a rerun takes everything it can from the cache."""

    from .embedder import check_kind, embed_images
    from .engine import BatchingEmbedder, CachingEmbedder, LengthPolicy, close_stack, find_layer, whole_calls
    from .errors import InvalidInputError, TextTooLongError
    from .factory import build_embedder
    from .textio import OUTPUT_FORMATS, write_vectors

    try:
        check_kind(kind)
    except ValueError as exc:
        raise EmbedtuneError(str(exc)) from None
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise EmbedtuneError(f"--out {output}: use a .parquet or .npy file name")
    spec = _spec(
        model,
        config,
        over_limit=over_limit,
        max_batch=max_batch,
        max_batch_tokens=max_batch_tokens,
        concurrency=concurrency,
    )
    cache_path = None if no_cache else (cache or default_home() / "embeddings.sqlite")
    embedder = build_embedder(spec, cache=cache_path, ray=_ray(ray))
    try:
        inputs = _embed_inputs(input, embedder, text_field=text_field, id_field=id_field)
    except BaseException:
        close_stack(embedder)
        raise
    batcher, cache_layer, policy = (find_layer(embedder, c) for c in (BatchingEmbedder, CachingEmbedder, LengthPolicy))

    import numpy as np

    ids = inputs.ids
    matrix = np.empty((len(ids), embedder.dim), dtype=np.float32)
    # The cache commits after each slice, so a killed run loses at most one (on a cluster it
    # commits as batches return, and the input goes whole: each call is one job).
    slice_size = max(len(ids), 1) if whole_calls(embedder) else 256
    try:
        with _progress("embedding") as progress:
            task = progress.add_task("embed", total=len(ids))
            for start in range(0, len(inputs.text_rows), slice_size):
                rows = inputs.text_rows[start : start + slice_size]
                try:
                    matrix[rows] = embedder.embed([inputs.texts[r] for r in rows], kind)  # type: ignore[arg-type]
                except (InvalidInputError, TextTooLongError) as exc:
                    raise _name_text(exc, rows[exc.index] - exc.index, ids) from None
                progress.advance(task, len(rows))
            for start in range(0, len(inputs.image_rows), slice_size):
                rows = inputs.image_rows[start : start + slice_size]
                try:
                    matrix[rows] = embed_images(embedder, [inputs.images[r] for r in rows], kind)  # type: ignore[arg-type]
                except InvalidInputError as exc:
                    raise EmbedtuneError(
                        f"image {ids[rows[exc.index]]!r} was rejected by the server: {exc.reason}"
                    ) from None
                progress.advance(task, len(rows))
    except BaseException:
        close_stack(embedder)
        raise
    written = write_vectors(output, ids, matrix, model=spec.model)

    if cache_layer is not None:
        for notice in cache_layer.notices:
            err.print(f"[yellow]note:[/] {notice}")
        new, cached = cache_layer.stats.misses, cache_layer.stats.hits
    else:
        new, cached = len(ids), 0
    what = f"{len(inputs.text_rows)} texts" + (f" and {len(inputs.image_rows)} images" if inputs.image_rows else "")
    summary = f"embedded {what} with {spec.model} ({matrix.shape[1]} dims): {new} new, {cached} from cache"
    if new + cached != len(ids):
        summary += f" (model inputs, after splitting {policy.stats.split} long texts)"
    out.print(f"{summary}; {batcher.stats.tokens} tokens in {batcher.stats.batches} batches")
    if policy.stats.truncated:
        out.print(f"[yellow]{policy.stats.truncated} texts over {policy.max_tokens} tokens were truncated[/]")
    if policy.stats.split:
        out.print(f"{policy.stats.split} texts over {policy.max_tokens} tokens were split and averaged")
    _print_usage(embedder)
    _print_image_notes(embedder)
    close_stack(embedder)
    out.print("wrote " + ", ".join(str(p) for p in written))
    _print_unread(inputs.skipped, inputs.skipped_images, inputs.failures, spec.model)


class _EmbedInputs:
    """What ``embed`` reads: ids in output order, the texts and images at their rows, what failed."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.texts: dict[int, str] = {}
        self.images: dict[int, Image] = {}
        self.failures: list[tuple[str, str]] = []
        self.skipped = 0
        self.skipped_images = 0

    @property
    def text_rows(self) -> list[int]:
        return sorted(self.texts)

    @property
    def image_rows(self) -> list[int]:
        return sorted(self.images)


def _embed_inputs(input: Path, embedder, *, text_field: str, id_field: str | None) -> _EmbedInputs:
    """A file or BEIR folder through ``read_texts``; any other folder through ``read_documents``,
    its images included when the model takes them."""
    from .embedder import takes_images
    from .textio import read_texts

    inputs = _EmbedInputs()
    if input.is_dir() and not (input / "corpus.jsonl").exists():
        from .documents import read_documents

        images = takes_images(embedder)
        source = read_documents(input, images=images)
        for row, document in enumerate(source.documents):
            inputs.ids.append(document.id)
            if document.image is not None:
                inputs.images[row] = document.image
            else:
                inputs.texts[row] = document.text
        inputs.failures = source.failures
        inputs.skipped = source.skipped
        if not images:
            inputs.skipped_images = _count_images(input)
        return inputs
    data = read_texts(input, text_field=text_field, id_field=id_field)
    inputs.ids = list(data.ids)
    inputs.texts = dict(enumerate(data.texts))
    return inputs


def _count_images(folder: Path) -> int:
    from .images import IMAGE_SUFFIXES

    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _print_image_notes(embedder) -> None:
    """One line per image the provider downscaled (over its size limit), naming the file."""
    layer = embedder
    while layer is not None:
        stats = getattr(layer, "image_stats", None)
        if stats is not None:
            for line in stats.downscaled:
                err.print(
                    f"[yellow]note:[/] {line} (over the size limit before the model's own resize)", highlight=False
                )
            return
        layer = getattr(layer, "inner", None)


def _print_unread(skipped: int, skipped_images: int, failures: list[tuple[str, str]], model: str) -> None:
    """Files of a folder that were not embedded: a note for skipped types, one error line per broken file (exit 2)."""
    if skipped_images:
        err.print(
            f"[yellow]note:[/] skipped {skipped_images} images: {model} takes text only "
            "(give a CLIP-style model to embed them)",
            highlight=False,
        )
    if skipped - skipped_images > 0:
        err.print(f"[yellow]note:[/] skipped {skipped - skipped_images} files of types not read", highlight=False)
    for path, reason in failures:
        err.print(f"[red]error:[/] cannot read {path}: {reason}", highlight=False, soft_wrap=True)
    if failures:
        sys.exit(2)


@app.command()
def chunk(
    input: Annotated[Path, typer.Argument(help="A .txt (one text per line), .jsonl, .parquet file or a BEIR folder.")],
    chunker_spec: Annotated[
        str,
        typer.Option(
            "--chunker",
            "-c",
            help="NAME[:key=value,...]: passages | fixed:size=200,overlap=50 | recursive | sentence | "
            "semantic:rule=percentile,threshold=95,min_tokens=32 (rules: percentile, stdev, iqr, gradient, absolute).",
        ),
    ],
    model: ModelOption = "local:all-MiniLM-L6-v2",
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Most tokens per chunk (default: the model's maximum).")
    ] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="Where to write the chunks: a .jsonl file.")] = Path(
        "chunks.jsonl"
    ),
    text_field: Annotated[str, typer.Option(help="The text field of .jsonl / .parquet input.")] = "text",
    id_field: Annotated[
        str | None, typer.Option(help="The id field (default: _id or id, else the line number).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Cut texts into chunks the model reads whole (tokens counted by its own tokenizer); one JSON line per chunk."""
    import json

    from .chunking import make_chunker
    from .engine import close_stack
    from .errors import InputError
    from .factory import build_embedder
    from .textio import read_texts

    if output.suffix.lower() != ".jsonl":
        raise EmbedtuneError(f"--out {output}: use a .jsonl file name")
    embedder = build_embedder(_spec(model, config), cache=default_home() / "embeddings.sqlite")
    try:
        chunker = make_chunker(chunker_spec, embedder, max_tokens=max_tokens)
        data = read_texts(input, text_field=text_field, id_field=id_field)
        for i, text in enumerate(data.texts):
            if not text.strip():
                raise InputError(f"{input}: text {i} (id {data.ids[i]!r}) is empty; remove it or give it some text")
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        sizes: list[int] = []
        slice_size = 256  # the semantic chunker embeds a slice's windows in one call
        with tmp.open("w", encoding="utf-8") as handle, _progress("chunking") as progress:
            task = progress.add_task("chunk", total=len(data))
            for start in range(0, len(data), slice_size):
                texts = data.texts[start : start + slice_size]
                for doc_id, chunks in zip(data.ids[start : start + slice_size], chunker.chunk_many(texts)):
                    for number, piece in enumerate(chunks):
                        row = {
                            "doc_id": doc_id,
                            "chunk": number,
                            "start": piece.start,
                            "end": piece.end,
                            "tokens": piece.tokens,
                            "text": piece.text,
                        }
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                        sizes.append(piece.tokens)
                progress.advance(task, len(texts))
        os.replace(tmp, output)
    finally:
        close_stack(embedder)
    mean = sum(sizes) / len(sizes) if sizes else 0.0
    out.print(
        f"chunked {len(data)} texts into {len(sizes)} chunks with {chunker.name} ({embedder.name} tokens): "
        f"mean {mean:.1f} tokens, max {max(sizes, default=0)}"
    )
    for notice in chunker.notices:
        err.print(f"[yellow]note:[/] {notice}", highlight=False)
    out.print(f"wrote {output}")


def _name_text(exc, offset: int, ids: list[str]) -> EmbedtuneError:
    """The error again, naming the text by its position in the whole input and by its id."""
    from .errors import InvalidInputError

    i = exc.index + offset
    if isinstance(exc, InvalidInputError):
        return EmbedtuneError(f"text {i} (id {ids[i]!r}) was rejected by the server: {exc.reason}")
    return EmbedtuneError(
        f"text {i} (id {ids[i]!r}) has {exc.tokens} tokens, over the model's limit of {exc.limit}; "
        "shorten it, or choose --over-limit truncate or split"
    )


def _print_usage(embedder) -> None:
    """Requests, tokens and dollars of an HTTP provider, as the server counted them."""
    from .engine import find_layer
    from .providers.http import HttpEmbedder

    http = find_layer(embedder, HttpEmbedder)
    if http is None:
        return
    cost = f", ${http.usage.usd:.4f}" if http.price is not None else " (no price: not a paid API)"
    retries = f"; {http.retries} retried" if http.retries else ""
    out.print(f"{http.name}: {http.usage.requests} requests, {http.usage.tokens} tokens{cost}{retries}")


@bench_app.command("batching")
def bench_batching(
    model: ModelOption = "local:all-MiniLM-L6-v2",
    n: Annotated[int, typer.Option("-n", help="How many texts to embed.")] = 100,
    max_batch: Annotated[int, typer.Option(help="Texts per call in the batched run.")] = 32,
    concurrency: Annotated[
        int | None, typer.Option(help="Calls in flight at once in the batched run (default: the provider's).")
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", help="Texts to use (default: the sample texts embedtune ships).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Embed N texts one call per text, then in batches, and print both times and the ratio."""
    from rich.table import Table

    from .bench import sample_texts, time_batching
    from .factory import open_provider
    from .textio import read_texts

    if n < 1:
        raise EmbedtuneError("-n must be at least 1")
    spec = _spec(model, config)
    texts = read_texts(input).texts if input else sample_texts()
    texts = [texts[i % len(texts)] for i in range(n)]
    provider = open_provider(spec)
    if concurrency is None:
        from .catalogue import split_uri
        from .factory import PROVIDER_DEFAULTS

        concurrency = spec.concurrency or PROVIDER_DEFAULTS[split_uri(spec.model)[0]][2]
    try:
        result = time_batching(provider, texts, max_batch=max_batch, concurrency=concurrency)
    finally:
        close = getattr(provider, "close", None)
        if close:
            close()

    table = Table(title=f"{spec.model}: {n} texts, {result.tokens} tokens (no cache)")
    for column in ("strategy", "calls", "seconds", "texts/s"):
        table.add_column(column, justify="right")
    table.add_row(
        "one call per text",
        str(result.sequential_calls),
        f"{result.sequential_s:.2f}",
        f"{n / result.sequential_s:.1f}",
    )
    label = f"batched (≤{max_batch} texts" + (f", {concurrency} at once)" if concurrency > 1 else ")")
    table.add_row(label, str(result.batched_calls), f"{result.batched_s:.2f}", f"{n / result.batched_s:.1f}")
    out.print(table)
    out.print(
        f"batched is {result.speedup:.2f}x the speed of one call per text; "
        f"largest difference between the two runs' vectors: {result.max_abs_diff:.2e}"
    )


HybridOption = Annotated[
    str | None, typer.Option("--hybrid", help="Fuse each model with BM25: rrf, convex, or rrf,convex.")
]
Bm25Option = Annotated[bool, typer.Option("--bm25", help="Report BM25 on its own too.")]
SplitOption = Annotated[
    str, typer.Option("--split", help="The qrels split to report (convex is tuned on train or dev).")
]
ChunkerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--chunker",
        help="Embed chunks, not whole documents: passages (windows of the model's own limit; "
        "passages:title=true reads each document's title first), fixed:size=200,overlap=50, recursive, sentence, "
        "semantic:rule=percentile,threshold=95, or none (whole documents). Repeat to compare chunkers.",
    ),
]
ChunkScoreOption = Annotated[
    str,
    typer.Option(
        "--chunk-score",
        help="A document's score from its chunks: first (its first passage), max, or sumN (sum of its N best); "
        "compare takes several joined by commas (first,max,sum2), a row each.",
    ),
]
GenerateOption = Annotated[
    str | None,
    typer.Option(
        "--generate-queries",
        help="Judge with queries generated from the documents, for a "
        "corpus without labels: title or span (BM25-filtered; a train split tunes convex).",
    ),
]
GeneratedCountOption = Annotated[int, typer.Option("--queries", help="Generated test queries (and as many for train).")]
VectorsOption = Annotated[
    str,
    typer.Option(
        "--vectors",
        help="Vector sizes and precisions to score side by side, comma-separated: float32, float16, int8, "
        "binary, dims=N (truncation), pca=N, combined with + (pca=64+int8, dims=256+binary, binary+rescore=8). "
        "All come from the same cached vectors.",
    ),
]


def _sample_collection() -> Path:
    from importlib import resources

    return Path(str(resources.files("embedtune") / "data" / "sample"))


def _compare(
    collection: Path | None,
    uris: list[str],
    *,
    bm25: bool,
    hybrid: str | None,
    split: str,
    config: Path | None,
    chunkers: list[str] | None = None,
    chunk_score: str = "max",
    generate: str | None = None,
    queries: int = 200,
    ray: str | None = None,
    vectors: str = "float32",
    feedback: str | None = None,
    fuse: bool = False,
    rerank: list[str] | None = None,
):
    """Load the collection, run every strategy with a progress bar, print the table, the winner and the recommendation."""

    from .catalogue import find_card
    from .evaluation import load_beir
    from .evaluation.compare import evaluate_strategies
    from .evaluation.report import comparison_table, recommendation_text

    specs = [_spec(uri, config) for uri in uris]
    for spec in specs:
        find_card(spec.model)  # an unknown model fails before the collection is read
    methods = [m.strip() for m in (hybrid or "").split(",") if m.strip()]
    from .evaluation.reranking import parse_rerank

    reranks = [parse_rerank(text) for text in rerank or ()]  # a bad folder fails before the collection is read
    if generate:
        from .adaptation.generate import generated_collection
        from .evaluation.collections import read_corpus

        if generate not in ("title", "span"):
            raise EmbedtuneError(f"--generate-queries {generate}: use title or span")
        folder = collection or _sample_collection()
        data = generated_collection(read_corpus(folder), generate, queries=queries, name=folder.name)
    else:
        data = load_beir(collection or _sample_collection())
    with _progress("embedding {task.description}") as progress:
        tasks: dict[str, object] = {}

        def on_progress(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done)

        result = evaluate_strategies(
            data,
            specs,
            bm25=bm25,
            hybrid=methods,
            split=split,
            cache=default_home() / "embeddings.sqlite",
            on_progress=on_progress,
            index_dir=default_home() / "stores",
            chunkers=chunkers or (),
            chunk_score=chunk_score,
            ray=_ray(ray),
            vectors=[v.strip() for v in vectors.split(",") if v.strip()],
            feedback=[f.strip() for f in (feedback or "").split(",") if f.strip()],
            fuse=fuse,
            rerank=reranks,
        )
    if generate:
        from dataclasses import replace

        note = (
            f"the queries are generated, not judged by people: {generate!r} generator, {len(data.qrels['test'])} "
            f"test queries (and {len(data.qrels.get('train', {}))} train), kept by a BM25 top-10 consistency "
            "filter; each query's document is indexed without the query's own text"
        )
        result = replace(result, notes=(*result.notes, note))
    out.print(comparison_table(result))
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")
    best = result.best
    picked = (
        f"picked on {result.tune_split} at {best.selection_score:.4f}"
        if result.tune_split
        else f"picked on {result.split} itself"
    )
    out.print(f"winner: {result.winner} (nDCG@10 {best.metrics['ndcg@10']:.4f} on {result.split}; {picked})")
    out.print(f"recommended: {recommendation_text(result)}", highlight=False)
    return result


@app.command("eval")
def eval_(
    collection: Annotated[Path, typer.Argument(help="A test collection folder in the BEIR layout.")],
    model: ModelOption = "local:all-MiniLM-L6-v2",
    bm25: Bm25Option = False,
    hybrid: HybridOption = None,
    split: SplitOption = "test",
    config: ConfigOption = None,
    chunker: ChunkerOption = None,
    chunk_score: ChunkScoreOption = "max",
    generate_queries: GenerateOption = None,
    queries: GeneratedCountOption = 200,
    vectors: VectorsOption = "float32",
    store_uri: Annotated[
        str | None,
        typer.Option("--store", help="Score a built store instead, with the strategy it was built with."),
    ] = None,
) -> None:
    """Score one model's retrieval on a collection (nDCG@10, Recall@100, MRR@10), with BM25 and hybrids."""
    if store_uri is not None:
        _eval_store(collection, store_uri, split)
        return
    _compare(
        collection,
        [model],
        bm25=bm25,
        hybrid=hybrid,
        split=split,
        config=config,
        chunkers=chunker,
        chunk_score=chunk_score,
        generate=generate_queries,
        queries=queries,
        vectors=vectors,
    )


def _eval_store(collection: Path, store_uri: str, split: str) -> None:
    """The metrics of a built store's Retriever on a collection's split."""
    from .engine import close_stack
    from .evaluation import evaluate, load_beir
    from .evaluation.compare import METRICS
    from .indexer import open_retriever
    from .retriever import Retriever

    data = load_beir(collection)
    queries, qrels = data.split(split)
    store = _open_store(store_uri)
    retriever = None
    try:
        retriever = open_retriever(store, cache=default_home() / "embeddings.sqlite")
        # An ensemble's folder holds its members' stores: they hold the documents.
        held = store.count() if isinstance(retriever, Retriever) else retriever.members[0].store.count()
        run = retriever.search(queries, k=max(100, retriever.strategy.depth))
    finally:
        store.close()
        if retriever is not None:
            retriever.close()
            if retriever.embedder is not None:
                close_stack(retriever.embedder)
    metrics = evaluate(qrels, run, METRICS)
    figures = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
    out.print(
        f"{retriever.strategy.name} from {store.location} ({held} documents) on {data.name} {split} "
        f"({len(queries)} queries): {figures}"
    )
    if held != len(data.corpus):
        out.print(f"[yellow]note:[/] the store holds {held} documents, the collection {len(data.corpus)}")


@app.command()
def compare(
    collection: Annotated[
        Path | None,
        typer.Argument(help="A BEIR collection folder (default: the sample collection embedtune ships)."),
    ] = None,
    models: Annotated[str, typer.Option("--models", help="Comma-separated model URIs or configured names.")] = (
        "local:all-MiniLM-L6-v2"
    ),
    bm25: Bm25Option = False,
    hybrid: HybridOption = None,
    split: SplitOption = "test",
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where to write comparison.json and comparison.png.")
    ] = Path("embedtune-report"),
    config: ConfigOption = None,
    chunker: ChunkerOption = None,
    chunk_score: ChunkScoreOption = "max",
    generate_queries: GenerateOption = None,
    queries: GeneratedCountOption = 200,
    ray: RayOption = None,
    vectors: VectorsOption = "float32",
    feedback: Annotated[
        str | None,
        typer.Option(
            "--feedback",
            help="Add rows with pseudo-relevance feedback, comma-separated: rocchio (dense runs), rm3 (BM25 runs); "
            "parameters tuned on dev or train.",
        ),
    ] = None,
    fuse: Annotated[
        bool,
        typer.Option(
            "--fuse",
            help="Also fuse BM25, every model's whole-document run and every sparse: model's run: N-way RRF, "
            "and convex with weights tuned on dev/train.",
        ),
    ] = False,
    rerank: Annotated[
        list[str] | None,
        typer.Option(
            "--rerank",
            help="A cross-encoder folder (from adapt --method reranker), :N to rerank the first N (default 50); "
            "adds each strategy reranked. Repeatable.",
        ),
    ] = None,
) -> None:
    """Compare models, BM25 and hybrids on a collection; write a JSON report and a plot."""
    import json

    from .evaluation.report import comparison_to_dict, plot_comparison

    uris = [uri.strip() for uri in models.split(",") if uri.strip()]
    if not uris:
        raise EmbedtuneError("--models names no model; give URIs like local:all-MiniLM-L6-v2,local:all-mpnet-base-v2")
    result = _compare(
        collection,
        uris,
        bm25=bm25,
        hybrid=hybrid,
        split=split,
        config=config,
        chunkers=chunker,
        chunk_score=chunk_score,
        generate=generate_queries,
        queries=queries,
        ray=ray,
        vectors=vectors,
        feedback=feedback,
        fuse=fuse,
        rerank=rerank,
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "comparison.json"
        tmp = out_dir / ".comparison.json.tmp"
        tmp.write_text(json.dumps(comparison_to_dict(result), indent=2), encoding="utf-8")
        os.replace(tmp, json_path)
        png_path = plot_comparison(result, out_dir / "comparison.png")
        strategy_path = _save_recommended(result, out_dir / "strategy.toml")
    except OSError as exc:
        raise EmbedtuneError(
            f"cannot write the report into {out_dir}: {exc.strerror}; choose another --out-dir"
        ) from None
    out.print(f"wrote {json_path}, {png_path}, {strategy_path}")
    if not generate_queries:
        out.print(f"build it: embedtune index {collection or _sample_collection()} --strategy {strategy_path}")


def _save_recommended(result, path: Path) -> Path:
    """The recommended strategy's file (the winner, or a cheaper one within noise of it), saying why."""
    from .evaluation.report import recommendation_text

    chosen = result.recommended
    picked = (
        f"nDCG@10 {chosen.selection_score:.4f} on {result.tune_split} (where it was picked), "
        if result.tune_split
        else f"picked on {result.split} itself (no dev or train split), "
    )
    comment = (
        f"embedtune compare on {result.collection}: {recommendation_text(result)}\n"
        f"{picked}{chosen.metrics['ndcg@10']:.4f} on {result.split} ({result.queries} queries)"
    )
    return chosen.strategy.save(path, comment=comment)


@app.command()
def optimize(
    collection: Annotated[
        Path | None,
        typer.Argument(help="A BEIR collection folder (default: the sample collection embedtune ships)."),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated model URIs or configured names (default: every offline and configured one).",
        ),
    ] = None,
    chunker: Annotated[
        list[str] | None,
        typer.Option(
            "--chunker",
            help="A chunker to search (repeat; default none, recursive, fixed:size=128,overlap=32, semantic).",
        ),
    ] = None,
    retrieval: Annotated[
        str,
        typer.Option(
            "--retrieval",
            help="Retrieval modes to search: dense, bm25, rrf, convex, and sparse (a sparse: model alone) and "
            "ensemble (convex fusion of the sparse run with BM25's and/or the dense run).",
        ),
    ] = "dense,bm25,rrf,convex",
    feedback: Annotated[
        str | None,
        typer.Option(
            "--feedback",
            help="Also search pseudo-relevance feedback, comma-separated: rocchio (dense runs), rm3 (BM25 runs); "
            "its parameters are fitted per trial on the tuning queries.",
        ),
    ] = None,
    reranker: Annotated[
        Path | None,
        typer.Option(
            "--reranker",
            help="A cross-encoder folder (from adapt --method reranker): also search reranking the first N.",
        ),
    ] = None,
    rerank_top: Annotated[
        str, typer.Option("--rerank-top", help="With --reranker: the N to search, comma-separated.")
    ] = "20,50",
    vectors: Annotated[
        str | None,
        typer.Option(
            "--vectors",
            help="Vector sizes and precisions to search, comma-separated (float32, float16, int8, binary, "
            "dims=N, pca=N, joined by +; default float32, float16, int8, pca=256+int8, pca=128+int8, binary).",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Ceilings the choice must meet: index_mb<=200 (the whole index), vectors_mb<=50 (vectors alone), "
            "query_ms<=50, usd<=1.",
        ),
    ] = None,
    time_limit: Annotated[
        str | None, typer.Option("--time", help="Stop starting trials after this long: 90s, 30m, 1h.")
    ] = None,
    trials: Annotated[int, typer.Option("--trials", help="How many trials the search should have run in all.")] = 30,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where the study, trials.jsonl, strategy.toml and pareto.png go.")
    ] = Path("embedtune-optimize"),
    config: ConfigOption = None,
    generate_queries: Annotated[
        str | None,
        typer.Option(
            "--generate-queries",
            help="No dev or train judgments: select on queries generated from the corpus (title or span).",
        ),
    ] = None,
    queries: GeneratedCountOption = 200,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Search models, chunkers, retrieval modes and precisions under a budget; write the Pareto front and the choice."""
    import contextlib

    from .optimize import Budget, SearchSpace
    from .optimize import optimize as run_optimize
    from .optimize.report import front_table
    from .optimize.space import DEFAULT_CHUNKERS, DEFAULT_VECTORS, parse_list

    with contextlib.suppress(ImportError):  # without optuna the search itself says what to install
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress line says what each trial did
    the_budget = Budget.parse(budget)
    timeout = _seconds(time_limit) if time_limit else None
    retrievals = tuple(parse_list(retrieval))
    specs = _search_models(models, config)
    sparse = [spec.model for spec in specs if spec.model.startswith("sparse:")]
    if not sparse and {"sparse", "ensemble"} & set(retrievals):
        from .catalogue import CATALOGUE

        sparse = [c.uri for c in CATALOGUE if c.provider == "sparse" and c.available_offline()]
    tops = parse_list(rerank_top)
    if not all(top.isdigit() for top in tops):
        raise EmbedtuneError(f"--rerank-top takes whole numbers joined by commas, such as 20,50, not {rerank_top!r}")
    space = SearchSpace(
        models=tuple(spec for spec in specs if not spec.model.startswith("sparse:")),
        chunkers=tuple(c.strip() for c in chunker or () if c.strip()) or DEFAULT_CHUNKERS,
        retrievals=retrievals,
        vectors=tuple(v.strip() for v in (vectors or "").split(",") if v.strip()) or DEFAULT_VECTORS,
        sparse=tuple(sparse),
        feedback=tuple(parse_list(feedback)),
        reranker=None if reranker is None else str(reranker),
        rerank_tops=tuple(int(top) for top in tops),
    )
    data, notes = _selectable_collection(collection or _sample_collection(), generate_queries, queries, seed)
    result = run_optimize(
        data,
        space,
        out=out_dir,
        budget=the_budget,
        trials=trials,
        timeout=timeout,
        cache=default_home() / "embeddings.sqlite",
        seed=seed,
        notes=notes,
        on_progress=lambda line: err.print(line, highlight=False, soft_wrap=True),
    )
    out.print(front_table(result))
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")
    chosen = result.chosen
    figure = ""
    if chosen.number in result.reported:
        figure = f", {result.reported[chosen.number]['ndcg@10']:.4f} on {result.report_split} (scored once, after the search)"
    out.print(
        f"chosen: {chosen.name} (trial {chosen.number}; nDCG@10 {chosen.quality:.4f} on {result.tune_split}{figure}); "
        f"{result.new_trials} new trials, {result.texts_embedded} texts embedded"
    )
    if result.recommendation is not None:
        out.print(f"recommended: {result.recommendation}")
    wrote = [out_dir / "strategy.toml", out_dir / "trials.jsonl", out_dir / "pareto.png"]
    if result.recommended is not None and result.recommended is not chosen:
        wrote.append(out_dir / "recommended.toml")
    out.print(f"wrote {', '.join(str(w) for w in wrote)}")
    if not generate_queries:
        out.print(
            f"build it: embedtune index {collection or _sample_collection()} --strategy {out_dir / 'strategy.toml'}"
        )


def _search_models(models: str | None, config: Path | None) -> list:
    """The given models, or every offline catalogue model and every configured embedder."""
    from .factory import load_config

    if models is not None:
        uris = [uri.strip() for uri in models.split(",") if uri.strip()]
        if not uris:
            raise EmbedtuneError("--models names no model; give URIs like local:all-MiniLM-L6-v2")
        return [_spec(uri, config) for uri in uris]
    from .optimize import offline_models

    if config is None and Path("embedtune.toml").exists():
        config = Path("embedtune.toml")
    configured = list(load_config(config).values()) if config else []
    found = offline_models() + configured
    return list({spec.model: spec for spec in found}.values())


def _selectable_collection(folder: Path, generate: str | None, count: int, seed: int):
    """The collection to search on, and a note when its tuning queries are generated."""
    from .evaluation import load_beir
    from .evaluation.collections import Collection, read_corpus

    if generate:
        from .optimize.generated import generated_search_collection

        data, note = generated_search_collection(
            read_corpus(folder), generate, queries=count, seed=seed, name=folder.name
        )
        return data, (note,)
    if (folder / "corpus.jsonl").is_file() and not (folder / "qrels").is_dir():
        return Collection(name=folder.name, corpus=read_corpus(folder), queries={}, qrels={}), ()
    return load_beir(folder), ()


def _seconds(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``1h30m`` -> seconds."""
    import re

    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise EmbedtuneError(f"--time {text!r}: give a duration such as 90s, 30m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise EmbedtuneError(f"--time {text!r}: give a duration above zero")
    return total


StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        help="Where the index lives: a folder (embedded store), postgresql://user@host/db[?table=NAME], "
        "or several PostgreSQL URIs joined by commas (shards).",
    ),
]
DEFAULT_STORE = "embedtune-index"
DEFAULT_STRATEGY = Path("embedtune-report") / "strategy.toml"


def _open_store(uri: str):
    from .stores import open_store

    if not uri.strip():
        raise EmbedtuneError("--store is empty; give a folder or a postgresql:// URI")
    return open_store(uri)


@app.command()
def index(
    corpus: Annotated[
        Path,
        typer.Argument(
            help="A BEIR folder, a .jsonl, .parquet or .txt file, or a folder of .txt, .md, .html and .pdf files."
        ),
    ],
    strategy_file: Annotated[
        Path | None,
        typer.Option(
            "--strategy",
            help="The strategy file to build (default: embedtune-report/strategy.toml, as compare writes it).",
        ),
    ] = None,
    store_uri: StoreOption = DEFAULT_STORE,
    text_field: Annotated[str, typer.Option(help="The text field of .jsonl / .parquet input.")] = "text",
    id_field: Annotated[
        str | None, typer.Option(help="The id field (default: _id or id, else the line number).")
    ] = None,
    keep_missing: Annotated[
        bool, typer.Option("--keep-missing", help="Keep documents the store holds that the input no longer has.")
    ] = False,
    ray: RayOption = None,
) -> None:
    """Build a strategy into a store: chunk, embed (through the cache), write. Reruns write only what changed."""
    from .documents import read_documents
    from .embedder import takes_images
    from .engine import CachingEmbedder, close_stack, find_layer
    from .factory import build_embedder
    from .indexer import follow_store_engine, index_documents
    from .strategy import Strategy

    if strategy_file is None:
        if not DEFAULT_STRATEGY.exists():
            raise EmbedtuneError(
                f"no --strategy given and no {DEFAULT_STRATEGY} here; run embedtune compare first, or give --strategy FILE"
            )
        strategy_file = DEFAULT_STRATEGY
    from .ensemble import Ensemble, load_strategy

    loaded = load_strategy(strategy_file)
    if isinstance(loaded, Ensemble):
        _index_ensemble(corpus, loaded, store_uri, text_field, id_field, keep_missing, ray)
        return
    strategy: Strategy = loaded
    embedder = None
    if strategy.embedder is not None:
        embedder = build_embedder(strategy.embedder, cache=default_home() / "embeddings.sqlite", ray=_ray(ray))
    sparse = None
    if strategy.sparse is not None:
        from .sparse.encoder import open_sparse_encoder

        sparse = open_sparse_encoder(strategy.sparse, cache=default_home() / "embeddings.sqlite")
    images = embedder is not None and takes_images(embedder)
    store = None
    try:  # the documents first: an unusable input opens no store
        source = read_documents(corpus, text_field=text_field, id_field=id_field, images=images)
        store = _open_store(store_uri)
        if strategy.embedder is not None and embedder is not None:
            spec = follow_store_engine(strategy.embedder, store, embedder)
            if spec != strategy.embedder:  # a rerun embeds on the engine the store was built with
                close_stack(embedder)
                embedder = build_embedder(spec, cache=default_home() / "embeddings.sqlite", ray=_ray(ray))
    except BaseException:
        if embedder is not None:
            close_stack(embedder)
        if store is not None:
            store.close()
        raise
    try:
        with _progress("indexing") as progress:
            task = progress.add_task("index", total=None)

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = index_documents(
                source.documents,
                strategy,
                store,
                embedder,
                delete_missing=not keep_missing,
                keep=source.failed_ids,
                on_progress=on_progress,
                sparse=sparse,
            )
        cache_layer = find_layer(embedder, CachingEmbedder) if embedder is not None else None
        chunks = store.count_chunks()
        if embedder is not None:
            _print_image_notes(embedder)
    finally:
        store.close()
        if embedder is not None:
            close_stack(embedder)
    embedded = ""
    if embedder is not None:
        new = cache_layer.stats.misses if cache_layer is not None else report.texts_embedded
        what = "texts and images" if images else "texts"
        embedded = f"; {report.texts_embedded} {what} to embed, {new} new to the cache"
    if sparse is not None:
        new = sparse.stats.misses
        embedded = f"; {report.sparse_encoded} documents to encode, {new} new to the cache"
    out.print(
        f"{store.location}: {report.documents} documents ({report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.deleted} deleted), {chunks} chunks with {strategy.name}{embedded}"
    )
    if report.truncated:
        out.print(f"[yellow]note:[/] {report.truncated} chunks over the model's limit were truncated")
    for notice in report.notices:
        err.print(f"[yellow]note:[/] {notice}", highlight=False)
    skipped_images = _count_images(corpus) if corpus.is_dir() and source.kind.value == "folder" and not images else 0
    if source.skipped and not skipped_images:
        err.print(f"[yellow]note:[/] skipped {source.skipped} files of types index does not read", highlight=False)
    model = strategy.model or (strategy.sparse.model if strategy.sparse is not None else "a bm25 strategy")
    _print_unread(source.skipped if skipped_images else 0, skipped_images, source.failures, model)


def _index_ensemble(
    corpus: Path, ensemble, store_uri: str, text_field: str, id_field: str | None, keep_missing: bool, ray
) -> None:
    """``index`` for an ensemble file: each member into its own store beside ``store_uri`` (a folder or database)."""
    from .documents import read_documents
    from .ensemble import index_ensemble

    source = read_documents(corpus, text_field=text_field, id_field=id_field)
    with _progress("indexing {task.description}") as progress:

        def on_member(i: int, member):
            task = progress.add_task(member.name, total=None)
            return lambda done, total: progress.update(task, completed=done, total=total)

        reports = index_ensemble(
            source.documents,
            ensemble,
            store_uri,
            cache=default_home() / "embeddings.sqlite",
            delete_missing=not keep_missing,
            keep=source.failed_ids,
            on_member=on_member,
            ray=_ray(ray),
        )
    for member, report in zip(ensemble.members, reports):
        out.print(
            f"  {member.name}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{report.deleted} deleted; {report.texts_embedded} texts to embed",
            highlight=False,
        )
    location = _open_store(store_uri).location  # the URI without its password (nothing connects)
    out.print(f"{location}: {len(source.documents)} documents with {ensemble.name}", highlight=False)


def _parse_filter(items: list[str] | None) -> dict | None:
    """``--filter lang=en --filter year=2024`` -> ``{"lang": "en", "year": 2024}`` (values read as JSON when they parse)."""
    import json

    if not items:
        return None
    where: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise EmbedtuneError(f"--filter {item!r}: write it as KEY=VALUE, e.g. --filter lang=en")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if isinstance(parsed, (dict, list)) or parsed is None:
            parsed = value
        where.setdefault(key.strip(), []).append(parsed)
    return {key: values[0] if len(values) == 1 else values for key, values in where.items()}


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    store_uri: StoreOption = DEFAULT_STORE,
    k: Annotated[int, typer.Option("-k", help="How many documents to return.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--filter", help="Only documents whose metadata has KEY=VALUE; repeat for more (same key: any of)."
        ),
    ] = None,
) -> None:
    """Search a built store with the strategy it was built with (read from its manifest)."""
    import json

    from .indexer import open_retriever

    if k < 1:
        raise EmbedtuneError(f"-k must be at least 1, not {k}")
    store = _open_store(store_uri)
    retriever = None
    try:
        retriever = open_retriever(store, cache=default_home() / "embeddings.sqlite")
        hits = retriever.search_one(query, k, where=_parse_filter(where))
    finally:
        store.close()
        if retriever is not None:
            from .engine import close_stack

            retriever.close()
            if retriever.embedder is not None:
                close_stack(retriever.embedder)
    if as_json:
        sys.stdout.write(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False, indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"{len(hits)} hits for {query!r} ({retriever.strategy.name})")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("document")
    table.add_column("chars", justify="right")
    table.add_column("text")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.doc_id, f"{hit.start}-{hit.end}", _snippet(hit.text))
    out.print(table)


@shards_app.command("add")
def shards_add(
    new_uri: Annotated[str, typer.Argument(help="An empty PostgreSQL database (with pgvector) to add as a shard.")],
    store_uri: Annotated[
        str,
        typer.Option(
            "--store",
            help="The store's databases now: one postgresql:// URI, or the shards' URIs joined by commas.",
        ),
    ],
) -> None:
    """Add a shard and rebalance: documents whose place changed move (vectors as stored, nothing re-embedded).

    Killed midway, the same command again completes it. Afterwards, name the store by all its URIs.
    """
    from .ensemble import add_ensemble_shard, stored_ensemble
    from .stores import is_postgres_uri, mask_uri
    from .stores.sharded import ShardedStore, add_shard

    uris = [uri.strip() for uri in store_uri.split(",") if uri.strip()]
    if not uris or not all(is_postgres_uri(uri) for uri in [*uris, new_uri]):
        raise EmbedtuneError("shards add works on PostgreSQL stores: give postgresql:// URIs to --store and NEW_URI")
    with ShardedStore.from_uris(uris) as home:
        ensemble = stored_ensemble(home)
    if ensemble is not None:  # each member's tables get the new shard
        with _progress("moving {task.description}") as progress:

            def on_member(i: int, member):
                task = progress.add_task(member.name, total=None)
                return lambda done, total: progress.update(task, completed=done, total=total)

            results = add_ensemble_shard(uris, new_uri, on_member=on_member)
        for member, result in zip(ensemble.members, results):
            out.print(f"  {member.name}: moved {result.moved} of {result.documents} documents", highlight=False)
        out.print(
            f"the ensemble {ensemble.name} has {len(uris) + 1} shards: "
            + ",".join(mask_uri(uri) for uri in [*uris, new_uri]),
            highlight=False,
        )
        return
    with _progress("moving documents") as progress:
        task = progress.add_task("move", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = add_shard(uris, new_uri, on_progress=on_progress)
    out.print(
        f"moved {result.moved} of {result.documents} documents; the store has {result.shards} shards: "
        + ",".join(mask_uri(uri) for uri in [*uris, new_uri])
    )


def _snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


@app.command()
def adapt(
    source: Annotated[Path, typer.Argument(help="A BEIR collection folder, or a JSONL file of training pairs.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="A new (or empty) folder for the model or adapter.")],
    model: ModelOption = "local:all-MiniLM-L6-v2",
    split: Annotated[str, typer.Option("--split", help="The collection's qrels split to train on.")] = "train",
    generate: Annotated[
        str | None,
        typer.Option("--generate", help="No labels: generate queries from the corpus (title, span or chat)."),
    ] = None,
    chat_model: Annotated[str | None, typer.Option("--chat-model", help="--generate chat: the chat model.")] = None,
    chat_url: Annotated[
        str, typer.Option("--chat-url", help="--generate chat: an OpenAI-compatible base URL.")
    ] = "http://localhost:8000/v1",
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="The collection whose documents a pairs file names by id.")
    ] = None,
    hard_negatives: Annotated[
        str, typer.Option("--hard-negatives", help="Mine one per pair: none, bm25 or model.")
    ] = "none",
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="finetune (a local model's weights), adapter (a query map; any model) or reranker (a cross-encoder).",
        ),
    ] = "finetune",
    epochs: Annotated[int, typer.Option("--epochs")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    lr: Annotated[
        float,
        typer.Option(
            "--lr", help="Learning rate (5e-5 gave +0.039 nDCG@10 on SciFact in one epoch; 2e-5 gave +0.019)."
        ),
    ] = 5e-5,
    loss: Annotated[
        str, typer.Option("--loss", help="mnrl, or cached-mnrl for big batches in little memory.")
    ] = "mnrl",
    matryoshka: Annotated[
        str | None, typer.Option("--matryoshka", help="Also train these leading dims, e.g. 384,256,128.")
    ] = None,
    max_seq_length: Annotated[
        int | None, typer.Option("--max-seq-length", help="Cut texts to this many tokens in training.")
    ] = None,
    max_pairs: Annotated[
        int | None,
        typer.Option("--max-pairs", help="Train on at most N pairs, sampled so every query keeps one first."),
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            "--max-minutes", help="Stop fine-tuning after M minutes (from the start), keeping the best dev checkpoint."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    config: ConfigOption = None,
) -> None:
    """Adapt a model to a corpus: fine-tune a local model, or learn a query adapter, then show nDCG@10 before and after."""

    from .adaptation.workflow import adapt as run_adapt

    dims = None
    if matryoshka:
        try:
            dims = [int(d) for d in matryoshka.split(",") if d.strip()]
        except ValueError:
            raise EmbedtuneError(f"--matryoshka {matryoshka}: give dims as integers, e.g. 384,256,128") from None
    chat = None
    if generate == "chat":
        from .adaptation.generate import ChatConfig

        if not chat_model:
            raise EmbedtuneError("--generate chat needs --chat-model (and --chat-url for your endpoint)")
        chat = ChatConfig(model=chat_model, base_url=chat_url)
    spec = _spec(model, config)
    with _progress("{task.description}") as progress:
        tasks: dict[str, object] = {}

        def on_progress(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done, total=total)

        outcome = run_adapt(
            source,
            spec,
            out_dir,
            method=method,
            split=split,
            generate=generate,
            corpus=corpus,
            chat=chat,
            hard_negatives=hard_negatives,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            loss=loss,
            matryoshka_dims=dims,
            max_seq_length=max_seq_length,
            max_pairs=max_pairs,
            max_minutes=max_minutes,
            seed=seed,
            cache=default_home() / "embeddings.sqlite",
            on_progress=on_progress,
        )
    what = {"finetune": "fine-tuned model", "reranker": "reranker"}.get(outcome.method, "query adapter")
    out.print(
        f"{what} trained on {outcome.train_pairs} pairs ({outcome.dev_pairs} held out for dev) "
        f"in {outcome.train_seconds:.1f} s; wrote {outcome.out_dir}"
    )
    out.print(f"dev queries: {outcome.dev_kind}")
    if outcome.finetune is not None:
        tuned = outcome.finetune
        kept = "the base model" if tuned.kept_base else f"step {tuned.best_step}"
        out.print(
            f"{tuned.steps} steps, {len(tuned.checkpoints)} dev checkpoints, kept {kept}; weights sha256 {tuned.weights_hash}"
        )
    for name, (before, after) in outcome.figures.items():
        if before is None or after is None:
            continue
        label = name if " " in name else f"{name} nDCG@10"
        if name.startswith("dev") and not outcome.dev_verified:
            label += " (generated queries: unverified)"
        out.print(f"{label}: {before:.4f} -> {after:.4f} ({after - before:+.4f})")
    for note in outcome.notes:
        out.print(f"[yellow]note:[/] {note}")
    if outcome.finetune is not None and outcome.finetune.kept_base:
        out.print(f"keep using --model {spec.model} (--model {outcome.uri} holds the same weights)")
    elif outcome.method == "finetune":
        out.print(f"use it as --model {outcome.uri}")
    elif outcome.method != "reranker":  # (its note says how to use it)
        out.print(f'use it with an embedder whose config says model = "{spec.model}", adapter = "{outcome.out_dir}"')


@app.command()
def distill(
    model: Annotated[str, typer.Argument(help="The local model to distil: local:NAME or local:/path/to/folder.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="A new (or empty) folder for the static model.")],
    dims: Annotated[
        int | None, typer.Option("--dims", help="Dims kept by PCA (default 256, or the model's own if fewer).")
    ] = None,
    pca: Annotated[
        bool, typer.Option("--pca/--no-pca", help="Reduce the token vectors with PCA (--no-pca keeps the model's).")
    ] = True,
    remove_tokens: Annotated[
        str | None,
        typer.Option(
            "--remove-tokens", help="Leave out vocabulary tokens matching this regular expression (default: [unusedN])."
        ),
    ] = None,
) -> None:
    """Distil a local model into a static model (model2vec): a vector per token, averaged; no torch to embed."""
    from .adaptation.distill import distill as run_distill

    outcome = run_distill(model, out_dir, dims=dims, pca=pca, remove_tokens=remove_tokens)
    out.print(
        f"distilled {outcome.base_model} into a static model of {outcome.vocabulary} tokens × {outcome.dim} dims "
        f"in {outcome.seconds:.1f} s; wrote {outcome.out_dir}",
        highlight=False,
    )
    out.print(f"use it as --model {outcome.uri}", highlight=False)


@app.command()
def serve(
    strategy_file: Annotated[
        Path | None, typer.Option("--strategy", help="Serve this strategy file's embedder (without --store).")
    ] = None,
    store_uri: Annotated[
        str | None,
        typer.Option("--store", help="Serve this built store: /v1/search, and /v1/embeddings with its model."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model URI or configured name (default: local:all-MiniLM-L6-v2)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; other than loopback only with API keys.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    keys_file: Annotated[
        Path | None,
        typer.Option("--keys-file", help="API keys, one per line (also read: the EMBEDTUNE_API_KEYS variable)."),
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute for each key.")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Tokens per minute for each key.")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body; larger ones get 413.")] = 4 << 20,
    max_inputs: Annotated[int, typer.Option(help="Most inputs in one embeddings request.")] = 2048,
    batch_texts: Annotated[
        int | None, typer.Option(help="Most texts per shared model batch (default: the embedder's max_batch).")
    ] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Most tokens per shared model batch.")] = None,
    max_wait_ms: Annotated[float, typer.Option(help="Longest wait for a shared batch to fill.")] = 5.0,
    micro_batching: Annotated[
        bool, typer.Option("--micro-batching/--no-micro-batching", help="Share model batches across requests.")
    ] = True,
    over_limit: Annotated[
        str | None, typer.Option(help="With --model: texts over the model's limit: error, truncate or split.")
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Embedding cache file (default: in EMBEDTUNE_HOME).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Embed everything afresh and store nothing.")] = False,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log each request.")] = True,
    config: ConfigOption = None,
) -> None:
    """Serve an OpenAI-compatible /v1/embeddings (and /v1/search with --store) over HTTP.

    Token-id inputs are read as cl100k_base ids (OpenAI's embedding tokenizer, which LangChain's OpenAIEmbeddings sends by default), decoded to text and embedded by the served model.
    """
    from .errors import require

    require("fastapi", "serve", import_now=False)
    from .service import ServiceConfig, load_served
    from .service.keys import KEYS_ENV, check_bind, read_keys
    from .service.server import run

    if store_uri is not None and (strategy_file is not None or model is not None):
        raise EmbedtuneError("--store serves the store's own strategy and model; drop --strategy and --model")
    if strategy_file is not None and model is not None:
        raise EmbedtuneError("give --strategy or --model, not both")
    if over_limit is not None and (strategy_file is not None or store_uri is not None):
        raise EmbedtuneError("--over-limit applies to --model; a strategy (or a store's) sets its own over_limit")
    if store_uri is not None and not store_uri.strip():
        raise EmbedtuneError("--store is empty; give a folder or a postgresql:// URI")
    keys = read_keys(env_value=os.environ.get(KEYS_ENV), file=keys_file)
    check_bind(host, keys)
    service_config = ServiceConfig(
        keys=keys,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        max_body_bytes=max_body_bytes,
        max_inputs=max_inputs,
        batch_texts=batch_texts,
        batch_tokens=batch_tokens,
        max_wait_ms=max_wait_ms,
        micro_batching=micro_batching,
    )
    spec = None
    if store_uri is None:
        if strategy_file is not None:
            from .ensemble import Ensemble, load_strategy

            loaded = load_strategy(strategy_file)
            if isinstance(loaded, Ensemble):
                raise EmbedtuneError(
                    f"{strategy_file} is an ensemble: index it, then serve the store (embedtune serve --store URI)"
                )
            spec = loaded.embedder
            if spec is None:
                raise EmbedtuneError(f"{strategy_file} is a bm25 strategy: it has no model to serve embeddings with")
        else:
            spec = _spec(model or "local:all-MiniLM-L6-v2", config, over_limit=over_limit)
    cache_path = None if no_cache else (cache or default_home() / "embeddings.sqlite")
    served = load_served(spec=spec, store_uri=store_uri, cache=cache_path)
    store = f" and the store {served.store.location}" if served.store is not None else ""
    err.print(
        f"serving {served.model or 'no model'}{store} on http://{host}:{port} "
        f"({len(keys)} API keys; micro-batching {'on' if micro_batching else 'off'})",
        highlight=False,
    )
    run(served, service_config, host=host, port=port, access_log=access_log)


def _optional_values(args: list[str]) -> list[str]:
    """``--ray`` alone means ``--ray auto``: typer has no option whose value may be left out, so
    the value is filled in when the next word is not an address (addresses have a colon)."""
    filled: list[str] = []
    for i, arg in enumerate(args):
        filled.append(arg)
        if arg == "--ray":
            following = args[i + 1] if i + 1 < len(args) else None
            if following is None or not (following == "auto" or ":" in following):
                filled.append("auto")
    return filled


class _NoteHandler(logging.Handler):
    """Library notes worth a user's eye (which engine ``auto`` chose, a first export) as ``note:`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[dim]note:[/] {record.getMessage()}", highlight=False, soft_wrap=True)


def main() -> None:
    notes = logging.getLogger("embedtune.engines")
    notes.setLevel(logging.INFO)
    notes.addHandler(_NoteHandler())
    try:
        app(args=_optional_values(sys.argv[1:]))
    except EmbedtuneError as exc:
        from rich.markup import escape

        # escaped: a message naming a table ("[sparse]", "[embedder]") is text, not rich markup
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; what was embedded so far is in the cache, rerun to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
