"""A data set file, parsed and checked, and the tables it names read (:mod:`medfed.data.files`
describes the format and turns them into a data set)."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfed.data.base import TaskKind
from medfed.data.contract import DataContract, read_contract
from medfed.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SiteFiles",
    "TableSource",
    "describes_images",
    "is_data_file",
    "read_source",
    "read_table",
    "read_toml",
]

_KEYS = {
    "task",
    "label",
    "time",
    "event",
    "features",
    "id_column",
    "positive",
    "test_fraction",
    "seed",
    "standardize",
    "sites",
    "file",
    "site_column",
    "contract",
}
_FROM_CONTRACT = ("task", "label", "time", "event", "features", "id_column", "positive")
_KINDS = {"binary", "multiclass", "survival", "regression"}
_SUFFIXES = {".csv", ".parquet", ".pq"}


def is_data_file(name: str) -> bool:
    """Whether a ``data.name`` is a data set file (a ``.toml`` path) rather than a bundled name."""
    return name.lower().endswith(".toml")


@dataclass(frozen=True)
class SiteFiles:
    name: str
    train: Path
    test: Path | None = None


@dataclass(frozen=True)
class TableSource:
    """A data set file, read and checked (the tables themselves are read by the loader)."""

    path: Path
    kind: TaskKind
    label: str | None
    time: str | None
    event: str | None
    features: tuple[str, ...]
    id_column: str | None
    positive: Any
    test_fraction: float
    seed: int
    standardize: str
    sites: tuple[SiteFiles, ...] = ()
    file: Path | None = None
    site_column: str | None = None
    contract: DataContract | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def outcome_columns(self) -> tuple[str, ...]:
        if self.kind is TaskKind.SURVIVAL:
            return (str(self.time), str(self.event))
        return (str(self.label),)


def _fail(path: Path, message: str) -> DataError:
    return DataError(f"{path}: {message}")


def read_toml(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A data set file's path and its TOML (a :class:`DataError` if it is not readable)."""
    p = Path(path).expanduser()
    try:
        return p, tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"no data set file at {p}; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the data set file {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(p, f"not valid TOML ({exc})") from None


def describes_images(raw: dict[str, Any]) -> bool:
    """Whether a data set file's sites are images folders (``images = "…"``), not tables."""
    sites = raw.get("sites")
    return isinstance(sites, dict) and any(
        isinstance(entry, dict) and "images" in entry for entry in sites.values()
    )


def read_source(path: str | Path) -> TableSource:
    """Parse and check a data set file; every problem is one :class:`DataError`."""
    p, raw = read_toml(path)
    if describes_images(raw):
        raise _fail(p, "describes images (images = …), not tables; medfed.data.images reads it")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        hints = [difflib.get_close_matches(k, sorted(_KEYS), n=1) for k in unknown]
        said = ", ".join(
            f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
            for k, h in zip(unknown, hints, strict=True)
        )
        raise _fail(p, f"unknown key(s) {said}; the keys are {', '.join(sorted(_KEYS))}")
    contract = None
    if "contract" in raw:
        given = [k for k in _FROM_CONTRACT if k in raw]
        if given:
            raise _fail(p, f"with a contract the task and columns come from it: drop {given}")
        if not isinstance(raw["contract"], str):
            raise _fail(p, 'contract = "…" is the path of a contract file')
        contract = read_contract(p.parent / raw["contract"])
        raw = {
            **raw,
            "task": str(contract.kind),
            "label": contract.label,
            "time": contract.time,
            "event": contract.event,
            "id_column": contract.id_column,
            "features": [c.name for c in contract.features],
        }
        raw = {k: v for k, v in raw.items() if v is not None}
    kind = raw.get("task")
    if kind not in _KINDS:
        raise _fail(p, f"task must be one of {', '.join(sorted(_KINDS))}, not {kind!r}")
    task = TaskKind(kind)
    names = {k: raw.get(k) for k in ("label", "time", "event", "id_column", "site_column")}
    for key, value in names.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise _fail(p, f"{key} must be a column name (text), not {value!r}")
    if task is TaskKind.SURVIVAL:
        if not (names["time"] and names["event"]) or names["label"]:
            raise _fail(p, 'a survival task names time = "…" and event = "…" (no label)')
    elif not names["label"] or names["time"] or names["event"]:
        raise _fail(p, f'a {kind} task names its label column: label = "…"')
    features = raw.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise _fail(p, "features must be a list of column names (empty: every other column)")
    if len(set(features)) != len(features):
        raise _fail(p, "features names a column twice")
    fraction = raw.get("test_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise _fail(p, f"test_fraction must be a number in (0, 1), not {fraction!r}")
    if not 0 < fraction < 1:
        raise _fail(p, f"test_fraction must be in (0, 1), not {fraction}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail(p, f"seed must be a whole number >= 0, not {seed!r}")
    standardize = raw.get("standardize", "site")
    if standardize not in ("site", "none"):
        raise _fail(p, f'standardize must be "site" or "none", not {standardize!r}')
    positive = raw.get("positive")
    if positive is not None and task is not TaskKind.BINARY:
        raise _fail(p, "positive is for a binary task only")
    base = p.parent
    sites: list[SiteFiles] = []
    file = None
    if ("sites" in raw) == ("file" in raw):
        raise _fail(p, 'give either [sites.NAME] tables or file = "…" with site_column = "…"')
    if "file" in raw:
        if not isinstance(raw["file"], str) or not names["site_column"]:
            raise _fail(p, 'file = "…" needs site_column = "…" (the column naming the site)')
        file = _table_path(p, base, raw["file"], "file")
    else:
        table = raw["sites"]
        if not isinstance(table, dict) or not table:
            raise _fail(p, "[sites] must hold one table per site: [sites.NAME] train = '…'")
        if names["site_column"]:
            raise _fail(p, "site_column goes with file = '…', not with [sites.NAME] tables")
        for site, entry in table.items():
            if not isinstance(entry, dict) or "train" not in entry:
                raise _fail(p, f'[sites.{site}] needs train = "…" (and optionally test = "…")')
            extra = sorted(set(entry) - {"train", "test"})
            if extra:
                raise _fail(p, f"[sites.{site}]: unknown key(s) {extra}; the keys are train, test")
            train = _table_path(p, base, entry["train"], f"sites.{site}.train")
            test = None
            if "test" in entry:
                test = _table_path(p, base, entry["test"], f"sites.{site}.test")
            sites.append(SiteFiles(site, train, test))
    outcome = (names["time"], names["event"]) if task is TaskKind.SURVIVAL else (names["label"],)
    clash = set(features) & {c for c in (*outcome, names["id_column"], names["site_column"]) if c}
    if clash:
        raise _fail(p, f"features cannot include the outcome, id or site column: {sorted(clash)}")
    return TableSource(
        path=p,
        kind=task,
        label=names["label"],
        time=names["time"],
        event=names["event"],
        features=tuple(features),
        id_column=names["id_column"],
        positive=positive,
        test_fraction=float(fraction),
        seed=seed,
        standardize=standardize,
        sites=tuple(sites),
        file=file,
        site_column=names["site_column"],
        contract=contract,
    )


def _table_path(source: Path, base: Path, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(source, f"{key} must be a file path (text)")
    path = (base / value).expanduser()
    if path.suffix.lower() not in _SUFFIXES:
        raise _fail(source, f"{key} = {value!r}: medfed reads .csv and .parquet files")
    if not path.is_file():
        raise _fail(source, f"{key} = {value!r}: no such file ({path})")
    return path


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (UTF-8) or Parquet file as a DataFrame; unreadable files are a DataError."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, encoding="utf-8", low_memory=False)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header, no rows)") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8 CSV"
        ) from None
    except ImportError as exc:
        raise DataError(f"{path}: reading Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read as a table ({str(exc).splitlines()[0]})") from None
    if len(frame) == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    frame.columns = [str(c) for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns):
        raise DataError(f"{path}: a column name appears twice")
    return frame
