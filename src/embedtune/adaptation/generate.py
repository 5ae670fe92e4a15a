"""Training pairs from a corpus alone: queries generated from its documents.

Three generators, each turning a document into queries for it:

- ``title``: the document's title is the query; the positive is the body (with the title cut
  off when the body repeats it, as Cranfield's does). Titles under three words are skipped.
- ``span``: one sentence of the document, drawn with a seeded RNG, is the query; the positive is
  the document without that sentence, so the model learns to find a document from what it says
  elsewhere rather than to spot a copy. Documents of one sentence are skipped; a text with no
  sentence marks at all (. ! ?) is cut into runs of ten words, which stand in for sentences.
- ``chat``: doc2query through any OpenAI-compatible ``/v1/chat/completions`` endpoint (Nogueira
  et al., "Document Expansion by Query Prediction", 2019; InPars, Bonifacio et al., 2022): the
  model is asked for ``per_doc`` search queries, one per line; the positive is the whole document.

Generated queries are de-duplicated on their normalised text (lower case, words only): a query
that two documents share is ambiguous, and only its first occurrence is kept. The consistency
filter (:func:`filter_consistent`) then keeps a pair only if BM25 or the base model ranks its
source document in the top ``k`` for the query (GPL, Wang et al., 2022, and InPars filter the
same way).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..embedder import Embedder
from ..engine.http import RetryPolicy, call_with_retries, check_status, post, redact_url
from ..errors import ConfigError, InputError, TransientError, require
from ..evaluation.collections import Collection, Document
from ._ranking import rank_with_positives
from .pairs import Pair

__all__ = [
    "GENERATORS",
    "ChatConfig",
    "ChatQueryGenerator",
    "dedupe",
    "filter_consistent",
    "generate_pairs",
    "generated_collection",
]

GENERATORS: tuple[str, ...] = ("title", "span", "chat")

_MIN_TITLE_WORDS = 3
_MIN_SPAN_WORDS = 6
_MAX_SPAN_WORDS = 32
# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
_SENTENCE_MARK = re.compile(r"[.!?]")
_RUN_WORDS = 10  # a text without sentence marks is cut into runs of this many words
_WORDS = re.compile(r"\w+")
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)]|q\d*[:.)])\s*", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ChatConfig:
    """An OpenAI-compatible chat endpoint that writes queries.

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``);
    ``api_key_env`` names the environment variable that holds the key (never the key itself).
    ``max_chars`` of each document are sent; ``concurrency`` requests run at once.
    """

    model: str
    base_url: str = "http://localhost:8000/v1"
    api_key_env: str | None = None
    temperature: float = 0.0
    max_chars: int = 4000
    max_tokens: int = 200
    concurrency: int = 4
    timeout: float = 60.0
    max_attempts: int = 6
    seed: int | None = 0

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("chat generation needs a model name")
        if "://" not in self.base_url:
            raise ConfigError(f"chat base_url must be an http(s) URL, not {redact_url(self.base_url)!r}")
        for name in ("max_chars", "max_tokens", "concurrency", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"chat {name} must be a positive integer, not {value!r}")
        if not self.timeout > 0:
            raise ConfigError(f"chat timeout must be positive, not {self.timeout!r}")


class _ChatClient(Protocol):
    """What the generator uses of an ``httpx.Client`` (tests inject theirs)."""

    @property
    def base_url(self) -> object: ...

    def post(self, url: str, *, json: Any = None, headers: dict[str, str] | None = None) -> Any: ...

    def close(self) -> None: ...


@dataclass
class ChatQueryGenerator:
    """Asks a chat model for search queries about one document at a time.

    The HTTP client is built from ``config`` unless one is given (tests inject theirs). Retries
    follow ``engine.http``'s policy: 429, 5xx, timeouts and malformed answers are retried; 401
    and other 4xx fail at once. The key travels only in the Authorization header.
    """

    config: ChatConfig
    client: _ChatClient | None = None
    retry: RetryPolicy | None = None
    api_key: str | None = field(default=None, repr=False)
    requests: int = 0

    def __post_init__(self) -> None:
        httpx = require("httpx", "openai")
        if self.api_key is None and self.config.api_key_env:
            self.api_key = os.environ.get(self.config.api_key_env)
            if not self.api_key:
                raise ConfigError(f"chat generation needs an API key: set {self.config.api_key_env}")
        self._owns_client = self.client is None
        if self.client is None:
            timeout = httpx.Timeout(self.config.timeout, connect=min(10.0, self.config.timeout))
            self.client = httpx.Client(base_url=self.config.base_url.rstrip("/") + "/", timeout=timeout)
        self.retry = self.retry or RetryPolicy(max_attempts=self.config.max_attempts)

    def close(self) -> None:
        if self._owns_client:
            self._client().close()

    def _client(self) -> _ChatClient:
        if self.client is None:  # __post_init__ builds one when none is given
            raise RuntimeError("ChatQueryGenerator has no HTTP client; it is set up in __post_init__")
        return self.client

    def _retry(self) -> RetryPolicy:
        if self.retry is None:  # __post_init__ sets the default policy
            raise RuntimeError("ChatQueryGenerator has no retry policy; it is set up in __post_init__")
        return self.retry

    def queries(self, text: str, n: int) -> list[str]:
        """Up to ``n`` distinct queries for a document (fewer when the model gives fewer lines)."""
        config = self.config
        client = self._client()
        what = f"chat model {config.model} at {redact_url(str(client.base_url))}"
        payload: dict[str, Any] = {
            "model": config.model,
            "messages": [
                {"role": "system", "content": "You write the search queries people type into a search engine."},
                {"role": "user", "content": _prompt(text[: config.max_chars], n)},
            ],
            "temperature": config.temperature,
            "max_tokens": config.max_tokens,
        }
        if config.seed is not None:
            payload["seed"] = config.seed
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

        def attempt() -> str:
            response = post(client, "chat/completions", json=payload, headers=headers, what=what)
            check_status(response, what=what)
            try:
                content = response.json()["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError("content is not a string")
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise TransientError(f"{what}: malformed answer ({type(exc).__name__})") from None
            return content

        content = call_with_retries(attempt, self._retry(), what=what)
        self.requests += 1
        return _parse_queries(content, n)


def generate_pairs(
    corpus: Mapping[str, Document],
    generator: str,
    *,
    per_doc: int = 1,
    limit: int | None = None,
    seed: int = 0,
    chat: ChatConfig | ChatQueryGenerator | None = None,
) -> list[Pair]:
    """Pairs of (generated query, the document it came from), de-duplicated.

    Documents are visited in an order shuffled by ``seed``, so ``limit`` (the most pairs to
    return) takes a random sample; each document gives up to ``per_doc`` queries (``title`` gives
    at most one). Each pair's ``positive_id`` is its document's id and ``source`` the generator.
    The same corpus, generator and seed give the same pairs.
    """
    if generator not in GENERATORS:
        raise ConfigError(f"unknown query generator {generator!r}; use one of {', '.join(GENERATORS)}")
    if per_doc < 1:
        raise ConfigError(f"per_doc must be at least 1, not {per_doc}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, not {limit}")
    order = sorted(corpus)
    random.Random(seed).shuffle(order)
    if generator == "chat":
        return _chat_pairs(corpus, order, per_doc, limit, chat)
    make = _title_queries if generator == "title" else _span_queries
    pairs: list[Pair] = []
    seen: set[str] = set()
    for doc_id in order:
        for query, positive in make(corpus[doc_id], per_doc, random.Random(f"{seed}\x00{doc_id}")):
            _add(pairs, seen, Pair(query=query, positive=positive, positive_id=doc_id, source=generator))
            if limit is not None and len(pairs) >= limit:
                return pairs
    return pairs


def dedupe(pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs with the first of each normalised query text only (lower case, words only)."""
    kept: list[Pair] = []
    seen: set[str] = set()
    for pair in pairs:
        _add(kept, seen, pair)
    return kept


def filter_consistent(
    pairs: Sequence[Pair],
    corpus: Mapping[str, Document],
    *,
    by: str | Embedder = "bm25",
    top_k: int = 10,
) -> list[Pair]:
    """Keep the pairs whose source document ranks in the top ``top_k`` for their query.

    ``by`` is ``"bm25"`` or an Embedder (the base model; documents go through it as
    ``"document"``, so a caching stack embeds the corpus once). The source document is ranked
    as the pair's positive text stands, so a query copied from its document (a title, a
    sentence) must be found from the rest of it. Every pair needs a ``positive_id`` in ``corpus``.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, not {top_k}")
    for i, pair in enumerate(pairs):
        if pair.positive_id is None or pair.positive_id not in corpus:
            raise InputError(
                f"pair {i} names no document of the corpus (positive_id={pair.positive_id!r}); "
                "the consistency filter needs pairs generated from this corpus"
            )
    runs = rank_with_positives(pairs, corpus, by=by, depth=top_k)
    return [pair for pair, run in zip(pairs, runs) if pair.positive_id in run.ranked[:top_k]]


def generated_collection(
    source: Collection | Mapping[str, Document],
    generator: str,
    *,
    queries: int = 200,
    train_queries: int | None = None,
    seed: int = 0,
    filter: str | Embedder | None = "bm25",
    top_k: int = 10,
    chat: ChatConfig | ChatQueryGenerator | None = None,
    name: str | None = None,
) -> Collection:
    """A test collection for a corpus without labels: generated queries judge their source documents.

    Split ``test`` holds ``queries`` queries and split ``train`` another ``train_queries``
    (default: as many) from other documents, so a convex hybrid can be tuned without touching
    the test queries. Each query's source document is indexed as the pair's positive, i.e.
    without the query's own text (a title or sentence), so retrieving it is not a copy task;
    every other document is as it was. With ``filter`` (``"bm25"`` or an Embedder) only
    queries passing :func:`filter_consistent` are used. The collection's name says the queries
    are generated and by which generator.
    """
    corpus = source.corpus if isinstance(source, Collection) else source
    name = name or (source.name if isinstance(source, Collection) else "corpus")
    train_queries = queries if train_queries is None else train_queries
    if queries < 1 or train_queries < 0:
        raise ConfigError("generate at least one test query (and a non-negative number of train queries)")
    wanted = queries + train_queries
    # Generate more than needed when a filter will drop some; title and span are cheap anyway.
    limit = wanted if filter is None else 2 * wanted + 10
    pairs = generate_pairs(corpus, generator, limit=limit, seed=seed, chat=chat)
    if filter is not None:
        pairs = filter_consistent(pairs, corpus, by=filter, top_k=top_k)
    if not pairs:
        raise InputError(
            f"the {generator!r} generator gave no usable query for {name!r}"
            + (" that passed the consistency filter" if filter is not None else "")
            + "; try another generator"
        )
    if len(pairs) < wanted:  # share what there is between the splits in the asked proportion
        queries = max(1, round(len(pairs) * queries / wanted))
        train_queries = len(pairs) - queries
    documents = dict(corpus)
    texts: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {"test": {}, "train": {}}
    for i, pair in enumerate(pairs[: queries + train_queries]):
        qid = f"gen-{i}"
        texts[qid] = pair.query
        qrels["test" if i < queries else "train"][qid] = {pair.positive_id: 1}  # type: ignore[dict-item]
        if documents[pair.positive_id].full_text != pair.positive:  # type: ignore[index]
            documents[pair.positive_id] = Document(title="", text=pair.positive)  # type: ignore[index]
    if not qrels["train"]:
        del qrels["train"]
    return Collection(name=f"{name} (queries generated by {generator})", corpus=documents, queries=texts, qrels=qrels)


# -- generators ---------------------------------------------------------------------------------


def _title_queries(doc: Document, n: int, rng: random.Random) -> list[tuple[str, str]]:
    title = " ".join(doc.title.split())
    if len(_WORDS.findall(title)) < _MIN_TITLE_WORDS:
        return []
    body = " ".join(doc.text.split())
    if body.lower().startswith(title.lower()):  # Cranfield repeats the title as the first line
        body = body[len(title) :].strip()
    return [(title, body)] if _WORDS.search(body) else []


def _span_queries(doc: Document, n: int, rng: random.Random) -> list[tuple[str, str]]:
    sentences = _sentences(doc.text)
    if len(sentences) < 2 and not _SENTENCE_MARK.search(doc.text):
        sentences = _word_runs(doc.text)  # unpunctuated text (NPL's lower-cased abstracts) has no sentences
    if len(sentences) < 2:
        return []
    usable = [i for i, s in enumerate(sentences) if len(_WORDS.findall(s)) >= _MIN_SPAN_WORDS]
    picked = rng.sample(usable, min(n, len(usable)))
    out = []
    for i in picked:
        words = sentences[i].split()
        query = " ".join(words[:_MAX_SPAN_WORDS])
        rest = " ".join(s for j, s in enumerate(sentences) if j != i)
        out.append((query, " ".join(part for part in (doc.title.strip(), rest) if part)))
    return out


def _word_runs(text: str) -> list[str]:
    """Runs of ``_RUN_WORDS`` words (the last one taking any short tail) standing in for sentences."""
    words = text.split()
    runs = [words[i : i + _RUN_WORDS] for i in range(0, len(words), _RUN_WORDS)]
    if len(runs) > 1 and len(runs[-1]) < _MIN_SPAN_WORDS:
        tail = runs.pop()
        runs[-1] += tail
    return [" ".join(run) for run in runs]


def _sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace collapsed (a rough splitter, enough for queries)."""
    return [" ".join(part.split()) for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def _chat_pairs(
    corpus: Mapping[str, Document],
    order: list[str],
    per_doc: int,
    limit: int | None,
    chat: ChatConfig | ChatQueryGenerator | None,
) -> list[Pair]:
    if chat is None:
        raise ConfigError("the chat generator needs a chat endpoint: pass chat=ChatConfig(model=..., base_url=...)")
    generator = chat if isinstance(chat, ChatQueryGenerator) else ChatQueryGenerator(chat)
    wanted = [doc_id for doc_id in order if corpus[doc_id].full_text.strip()]
    if limit is not None:  # at least one query per document: no need to ask more documents
        wanted = wanted[:limit]
    try:
        with ThreadPoolExecutor(max_workers=generator.config.concurrency) as pool:
            answers = list(pool.map(lambda d: generator.queries(corpus[d].full_text, per_doc), wanted))
    finally:
        if generator is not chat:
            generator.close()
    pairs: list[Pair] = []
    seen: set[str] = set()
    for doc_id, queries in zip(wanted, answers):
        for query in queries:
            _add(pairs, seen, Pair(query=query, positive=corpus[doc_id].full_text, positive_id=doc_id, source="chat"))
            if limit is not None and len(pairs) >= limit:
                return pairs
    return pairs


def _prompt(text: str, n: int) -> str:
    what = "one search query" if n == 1 else f"{n} different search queries"
    return (
        f"Write {what} that a person would type to find the document below. "
        "Each query is short, uses the document's terms, and is answered by the document. "
        "Answer with one query per line and nothing else.\n\n"
        f"Document:\n{text}"
    )


def _parse_queries(content: str, n: int) -> list[str]:
    queries: list[str] = []
    seen: set[str] = set()
    for line in content.splitlines():
        query = _LIST_MARK.sub("", line).strip().strip("\"'“”").strip()
        key = _normalise(query)
        if key and key not in seen:
            seen.add(key)
            queries.append(query)
        if len(queries) == n:
            break
    return queries


def _normalise(query: str) -> str:
    return " ".join(_WORDS.findall(query.lower()))


def _add(pairs: list[Pair], seen: set[str], pair: Pair) -> None:
    key = _normalise(pair.query)
    if key and key not in seen:
        seen.add(key)
        pairs.append(pair)
