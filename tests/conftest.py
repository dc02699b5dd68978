"""Fixtures shared by every test area: where the repo, the bundled sample and the shared data are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data_samples" / "hongkong"
SHARED_DATA = Path(os.environ.get("CSPON_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled demo sample (data_samples/hongkong); skips when it is not there."""
    if not (SAMPLE / "before_20160927.tif").is_file():
        pytest.skip(f"bundled sample not found at {SAMPLE}")
    return SAMPLE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (../shared/data); skips when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CSPON_SHARED_DATA)")
    return SHARED_DATA
