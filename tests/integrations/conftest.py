"""Fixtures for the framework adapters: stacks around the session's MiniLM, and small built stores."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _integration_data import FAKE, MINILM, BuiltStore, build_store

from embedtune.embedder import Embedder
from embedtune.engine import CachingEmbedder, CountingEmbedder, find_layer
from embedtune.factory import build_embedder


@pytest.fixture(scope="session")
def minilm_store(tmp_path_factory: pytest.TempPathFactory, minilm) -> BuiltStore:
    """A MiniLM store of the corpus, chunked so that hits carry offsets inside documents (read only)."""
    folder = tmp_path_factory.mktemp("minilm-store")
    return build_store(folder / "store", MINILM, build_embedder(MINILM, provider=minilm), "fixed:size=8")


@pytest.fixture()
def fake_store(tmp_path: Path) -> BuiltStore:
    """A store of :func:`corpus` built with the fake model, for tests about plumbing."""
    return build_store(tmp_path / "fake-store", FAKE, build_embedder(FAKE))


@dataclass
class Counted:
    """A MiniLM stack with a cache, and the counter behind it of what reached the model."""

    stack: Embedder
    counter: CountingEmbedder
    reference: Embedder  # the same model without a cache: the library's own vectors


@pytest.fixture()
def counted_minilm(tmp_path: Path, minilm) -> Iterator[Counted]:
    counter = CountingEmbedder(minilm)
    stack = build_embedder(MINILM, provider=counter, cache=tmp_path / "cache.sqlite")
    yield Counted(stack, counter, build_embedder(MINILM, provider=minilm))
    cache = find_layer(stack, CachingEmbedder)
    if cache is not None:  # only the cache: the provider is the session's
        cache.close()


@pytest.fixture()
def open_files() -> Callable[[Path], set[str]]:
    """The files under a folder this process holds open (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd to see open files")

    def under(folder: Path) -> set[str]:
        found = set()
        for fd in os.listdir(fds):
            try:
                target = os.readlink(fds / fd)
            except OSError:  # closed while listing
                continue
            if target.startswith(str(folder)):
                found.add(target)
        return found

    return under
