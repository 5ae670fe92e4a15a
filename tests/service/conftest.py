"""Fixtures of the service tests (helpers are in ``_serving.py``)."""

from __future__ import annotations

import pytest
from _serving import MINILM

from embedtune.factory import build_embedder


@pytest.fixture(scope="module")
def minilm_stack(minilm):
    """The library's stack over the session's MiniLM (no cache): what the service serves."""
    return build_embedder(MINILM, provider=minilm)
