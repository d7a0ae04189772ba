"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tcga_dir() -> Path:
    """The real Fed-TCGA-BRCA folder (``../shared/data/tcga_brca``), or skip the test.

    ``MEDFED_SHARED_DATA`` overrides the location of ``shared/data``.
    """
    shared = Path(os.environ.get("MEDFED_SHARED_DATA", _REPO.parent / "shared" / "data"))
    folder = shared / "tcga_brca"
    if not (folder / "brca.csv").is_file() or not (folder / "train_test_split.csv").is_file():
        pytest.skip(f"needs the Fed-TCGA-BRCA data: {folder} (../shared/data/tcga_brca) is absent")
    return folder
