"""Shared fixtures: real models are loaded once per session and shared."""

from __future__ import annotations

import os
from pathlib import Path

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
