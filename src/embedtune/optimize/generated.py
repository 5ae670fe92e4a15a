"""A corpus with no judgments: the search selects on queries generated from the corpus itself.

:func:`generated_search_collection` reads nothing but the documents: each generated query judges
the document it came from (see :func:`~embedtune.adaptation.generate.generated_collection`), its
``train`` split picks the strategy and its ``test`` split reports it. The note it returns travels
with the result, because generated queries are not a user's: they are biased towards strategies
that match a document's own words.
"""

from __future__ import annotations

from collections.abc import Mapping

from embedtune.errors import ConfigError
from embedtune.evaluation.collections import Collection, Document

__all__ = ["GENERATORS", "generated_search_collection"]

# The offline generators (no model, no network): a document's title, or a span of its text.
GENERATORS: tuple[str, ...] = ("title", "span")


def generated_search_collection(
    corpus: Mapping[str, Document], generator: str, *, queries: int = 200, seed: int = 0, name: str
) -> tuple[Collection, str]:
    """The collection to search on, with ``queries`` generated test and as many train queries, and
    the note that says the choice was made without judgments (and what that favours)."""
    from embedtune.adaptation.generate import generated_collection

    if generator not in GENERATORS:
        raise ConfigError(f"--generate-queries {generator}: use {' or '.join(GENERATORS)}")
    data = generated_collection(corpus, generator, queries=queries, seed=seed, name=name)
    note = (
        f"selected on queries generated from the corpus ({generator!r} generator, "
        f"{len(data.qrels.get('train', {}))} train queries, BM25-filtered; no judgments were read), not "
        "written or judged by people: they favour strategies that match a document's own words (BM25, "
        "hybrids); the test figures are on generated queries too, so confirm the choice on real queries "
        "when you have some"
    )
    return data, note
