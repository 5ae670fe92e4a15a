from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).parents[2].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The read-only BEIR collections beside the repository (../shared/datasets)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"test collections not found at {SHARED_DATASETS}")
    return SHARED_DATASETS
