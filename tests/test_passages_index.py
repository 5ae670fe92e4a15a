"""Title-prefixed passages through index and search: the model reads the title, hits show the document."""

from embedtune.documents import SourceDocument
from embedtune.engine import CountingEmbedder
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.indexer import index_documents
from embedtune.retriever import Retriever
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Strategy

FAKE = EmbedderSpec(model="fake:hash-256", over_limit="truncate")
TITLE = "Glacier retreat"
# A BEIR document as corpus_documents builds it: title, one space, text. Its later passages say
# nothing of glaciers: only the title can bring them to a glacier query.
BODY = "ice " * 5 + " ".join(f"sentence {i} about rivers and sediment" for i in range(30))
DOCS = [
    SourceDocument(id="g", text=f"{TITLE} {BODY}", metadata={"title": TITLE}, title=TITLE),
    SourceDocument(id="h", text="harbour sediment " * 40, title=""),
]


def build(tmp_path, chunker: str, score: str = "max"):
    counter = CountingEmbedder(open_provider(FAKE))
    strategy = Strategy(embedder=FAKE, chunker=chunker, chunk_score=score)
    store = EmbeddedStore(tmp_path / chunker.replace(":", "_").replace(",", "_").replace("=", "-"))
    embedder = build_embedder(FAKE, provider=counter)
    index_documents(DOCS, strategy, store, embedder)
    return counter, Retriever(strategy, store, embedder)


def test_the_title_reaches_the_embedder_but_hits_show_the_documents_own_text(tmp_path):
    counter, retriever = build(tmp_path, "fixed:size=30,overlap=5,title=true")
    embedded = [text for text in counter.texts if "rivers" in text]
    assert len(embedded) > 3 and all(text.startswith(TITLE) for text in embedded)
    hits = retriever.search_one("sentence 25 rivers", 2)
    assert hits[0].doc_id == "g"
    text = DOCS[0].text
    for hit in hits:
        doc = next(d for d in DOCS if d.id == hit.doc_id)
        assert hit.text == doc.text[hit.start : hit.end]
    best = hits[0]
    assert best.start > len(TITLE) and not best.text.startswith(TITLE) and best.text in text
    assert best.metadata == {"title": TITLE}

    plain, _ = build(tmp_path, "fixed:size=30,overlap=5")
    assert not any(text.startswith(TITLE) for text in plain.texts if "sentence 25" in text)


def test_first_scores_documents_by_their_first_passage_through_the_retriever(tmp_path):
    # "harbour" is only in h; "sentence 29" only in g's last passage: first cannot see it, max can
    _, by_first = build(tmp_path, "fixed:size=30", score="first")
    _, by_max = build(tmp_path, "fixed:size=30", score="max")
    query = {"q": "sentence 29 about rivers"}
    first, best = by_first.search(query, 2)["q"], by_max.search(query, 2)["q"]
    assert set(first) == set(best) == {"g", "h"}
    assert best["g"] > first["g"]  # max sees g's last passage, first only its opening one
    hit = by_first.search_one("sentence 29 about rivers", 1)[0]
    assert hit.doc_id == "g" and hit.start == 0  # the passage that scored it: the first


def test_documents_carry_their_title_apart_from_the_text(tmp_path):
    from importlib import resources

    from embedtune.documents import corpus_documents, read_documents
    from embedtune.evaluation import load_beir

    sample = load_beir(resources.files("embedtune") / "data" / "sample")
    titled = [d for d in corpus_documents(sample.corpus) if d.title]
    assert titled and all(d.text.startswith(d.title + " ") for d in titled)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"_id": "a", "title": "T", "text": "body"}\n{"_id": "b", "text": "plain"}\n')
    assert [(d.text, d.title) for d in read_documents(rows).documents] == [("T body", "T"), ("plain", "")]
