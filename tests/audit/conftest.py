"""Fixtures of the audit tests: real data, one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from medfed.data import load_dataset
from medfed.data.base import FederatedDataset


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread() -> Iterator[None]:
    """The models are tiny: one thread is faster than two on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def breast() -> FederatedDataset:
    return load_dataset("breast-cancer")
