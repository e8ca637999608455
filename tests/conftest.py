"""Shared pytest fixtures. Keep each one small; tests use real data, never mocks."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The project's dataset root with MNIST and Fashion-MNIST installed and MD5-verified.

    Runs the offline fetch, which does nothing (one line) when the files are already in place.
    """
    from sne_core.fetch import fetch
    root = REPO / "data" / "datasets"
    fetch(root)
    return root
