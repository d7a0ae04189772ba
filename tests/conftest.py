"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


def _share_the_cores() -> None:
    """Under pytest-xdist, give each worker its share of the cores for torch and BLAS.

    torch (and OpenBLAS) start one thread per core in every process; two workers on two cores
    then run four busy threads that wait on each other, and the small models of the tests
    train slower than on one thread. The share goes into the environment before torch is
    imported, so it holds in this worker and in every process a test starts (nodes, a
    coordinator, the CLI): a test comparing a subprocess's model with this process's, bit for
    bit, sees the same thread count on both sides. Set ``OMP_NUM_THREADS`` to choose otherwise.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    if workers < 2:
        return
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, share)


_share_the_cores()


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
