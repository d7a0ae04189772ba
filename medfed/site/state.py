"""Per-site state: what a site keeps from one round to the next, kept where the site is.

A site may need to remember things between rounds: a control variate (SCAFFOLD), personal
layers (FedPer, FedBN), normalisation statistics, its DP-SGD accountant's history. A
:class:`SiteState` is that memory — named numpy arrays — and a :class:`SiteStateStore` keeps
one per *(run, site)*, saved after every round the site trains in:

- a simulation keeps it in the run folder (``RUN/site-state/``), so a restarted worker or a
  ``medfed simulate --resume`` continues with it;
- a node keeps it on its own disk (``STATE/site-state/JOB/SITE/``) and nothing of it leaves
  the node;
- without a folder (``medfed.simulate()`` in memory) it lives as long as the site.

Each saved version is stamped with its round, and a round reads the newest version saved
*before* it: a round that is run again (a coordinator restarted in the middle of it) starts
from exactly the state the first attempt started from. The two newest versions are kept.

A task reads and writes its site's state through ``ctx.state`` in its train function::

    def train(model, data, ctx):
        seen = ctx.state.get("rounds_seen", np.zeros(1))
        ctx.state["rounds_seen"] = seen + 1
        return default_train(model, data, ctx)

Names starting with ``medfed.`` are medfed's own (the DP-SGD accountant's history).
Files are safetensors written atomically; nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from medfed.errors import SerializationError
from medfed.records import Params
from medfed.serde import atomic_write, params_from_bytes, params_to_bytes

__all__ = ["DirectoryStateStore", "MemoryStateStore", "SiteState", "SiteStateStore"]

_VERSION = "1"
_KEEP = 2  # versions kept per (run, site): the newest, and the one a re-run round needs
_FILE = re.compile(r"^round-(\d{6,})\.safetensors$")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

Array = npt.NDArray[Any]


class SiteState(MutableMapping[str, Array]):
    """A site's named arrays, and the round they were saved after (0: nothing saved yet).

    Values are numpy arrays (a torch tensor is accepted and copied to a CPU array). Reading
    gives the stored array itself: change it by assigning a new one.
    """

    __slots__ = ("_arrays", "round")

    def __init__(self, arrays: dict[str, Array] | None = None, *, round: int = 0) -> None:
        self._arrays: dict[str, Array] = {}
        self.round = round
        for name, value in (arrays or {}).items():
            self[name] = value

    def __getitem__(self, name: str) -> Array:
        return self._arrays[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise ValueError(f"a site state name must be text of 1 to 200 characters: {name!r}")
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise TypeError(
                f"site state {name!r} must be a numeric numpy array (or torch tensor), "
                f"got {type(value).__name__}"
            )
        self._arrays[name] = np.array(value, copy=True)

    def __delitem__(self, name: str) -> None:
        del self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"SiteState(round={self.round}, {inner})"

    def copy(self) -> SiteState:
        return SiteState(dict(self._arrays), round=self.round)


class SiteStateStore(Protocol):
    """Keeps each (run, site)'s :class:`SiteState`, one version per round it was saved in."""

    def load(self, run: str, site: str, *, before: int) -> SiteState:
        """The newest state saved after a round earlier than ``before`` (empty if none)."""
        ...

    def latest(self, run: str, site: str) -> SiteState:
        """The newest state saved, whatever its round (empty if none)."""
        ...

    def save(self, run: str, site: str, round: int, state: SiteState) -> None:
        """Keep ``state`` as the state after ``round``."""
        ...


class MemoryStateStore:
    """States in this process's memory: they last as long as the store."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], dict[int, SiteState]] = {}

    def load(self, run: str, site: str, *, before: int) -> SiteState:
        versions = self._versions.get((run, site), {})
        rounds = [r for r in versions if r < before]
        return versions[max(rounds)].copy() if rounds else SiteState()

    def latest(self, run: str, site: str) -> SiteState:
        versions = self._versions.get((run, site), {})
        return versions[max(versions)].copy() if versions else SiteState()

    def save(self, run: str, site: str, round: int, state: SiteState) -> None:
        versions = self._versions.setdefault((run, site), {})
        versions[round] = SiteState(dict(state), round=round)
        for old in sorted(versions)[:-_KEEP]:
            del versions[old]


class DirectoryStateStore:
    """States as safetensors files: ``ROOT/RUN/SITE/round-NNNNNN.safetensors``.

    Each file is written atomically, so a crash at any moment leaves every version whole.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DirectoryStateStore({str(self.root)!r})"

    def folder(self, run: str, site: str) -> Path:
        return self.root / _part(run) / _part(site)

    def _rounds(self, run: str, site: str) -> list[int]:
        folder = self.folder(run, site)
        if not folder.is_dir():
            return []
        return sorted(int(m[1]) for p in folder.iterdir() if (m := _FILE.match(p.name)))

    def _read(self, run: str, site: str, round: int) -> SiteState:
        path = self.folder(run, site) / _name(round)
        try:
            params, meta = params_from_bytes(path.read_bytes())
        except (OSError, SerializationError) as exc:
            raise SerializationError(
                f"the site state in {path} cannot be read ({exc}); delete the file to start "
                "that site's state afresh"
            ) from None
        if meta.get("medfed.site_state") != _VERSION:
            raise SerializationError(f"{path} is not a medfed site state of version {_VERSION}")
        return SiteState(dict(params), round=round)

    def load(self, run: str, site: str, *, before: int) -> SiteState:
        rounds = [r for r in self._rounds(run, site) if r < before]
        return self._read(run, site, rounds[-1]) if rounds else SiteState()

    def latest(self, run: str, site: str) -> SiteState:
        rounds = self._rounds(run, site)
        return self._read(run, site, rounds[-1]) if rounds else SiteState()

    def save(self, run: str, site: str, round: int, state: SiteState) -> None:
        folder = self.folder(run, site)
        blob = params_to_bytes(
            Params(dict(state)), {"medfed.site_state": _VERSION, "round": str(round)}
        )
        atomic_write(folder / _name(round), blob)
        for old in self._rounds(run, site)[:-_KEEP]:
            (folder / _name(old)).unlink(missing_ok=True)


def _name(round: int) -> str:
    if round < 0:
        raise ValueError(f"a round number cannot be negative: {round}")
    return f"round-{round:06d}.safetensors"


def _part(name: str) -> str:
    """A run or site name as one safe path component (a digest when it is not one)."""
    if _SAFE.match(name) and name not in {".", ".."}:
        return name
    return "x-" + hashlib.sha256(name.encode()).hexdigest()[:24]
