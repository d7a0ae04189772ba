"""A site's state store: versions per round, the newest before a round, whole files only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfed.errors import SerializationError
from medfed.site.state import DirectoryStateStore, MemoryStateStore, SiteState


def _stores(tmp_path: Path) -> list[object]:
    return [MemoryStateStore(), DirectoryStateStore(tmp_path / "state")]


@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_a_round_reads_the_newest_state_saved_before_it(tmp_path: Path, kind: str) -> None:
    store = _stores(tmp_path)[kind == "directory"]
    assert len(store.load("run", "a", before=1)) == 0  # nothing yet: an empty state
    for r in (1, 2, 4):
        store.save("run", "a", r, SiteState({"c": np.full(3, float(r))}))
    assert store.load("run", "a", before=4)["c"][0] == 2.0  # round 4 run again: from round 2
    assert store.load("run", "a", before=5).round == 4
    assert store.latest("run", "a")["c"][0] == 4.0
    # only the two newest versions are kept
    assert len(store.load("run", "a", before=2)) == 0
    # keyed by run and site
    assert len(store.load("other-run", "a", before=9)) == 0
    assert len(store.load("run", "b", before=9)) == 0


def test_state_values_are_copied_numeric_arrays(tmp_path: Path) -> None:
    state = SiteState()
    source = np.ones(2)
    state["x"] = source
    source[0] = 5
    assert state["x"][0] == 1.0  # a copy, not the caller's array
    state["t"] = torch.arange(3)  # a tensor becomes a CPU array
    assert isinstance(state["t"], np.ndarray) and state["t"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="numeric numpy array"):
        state["s"] = np.array(["text"])
    with pytest.raises(TypeError, match="numeric numpy array"):
        state["l"] = [1, 2]
    with pytest.raises(ValueError, match="1 to 200"):
        state[""] = np.ones(1)


def test_directory_store_files_are_safe_names_and_a_damaged_one_says_what_to_do(
    tmp_path: Path,
) -> None:
    store = DirectoryStateStore(tmp_path)
    store.save("../../escape", "site a/b", 1, SiteState({"x": np.ones(1)}))
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 1 and tmp_path in files[0].parents  # nothing written outside
    assert store.load("../../escape", "site a/b", before=2)["x"][0] == 1.0
    files[0].write_bytes(b"not a state")
    with pytest.raises(SerializationError, match="delete the file"):
        store.load("../../escape", "site a/b", before=2)
