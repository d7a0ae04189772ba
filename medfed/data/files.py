"""A consortium's own tables as a data set: one TOML file that says where each site's rows are.

::

    # consortium-data.toml — paths are relative to this file
    task = "binary"            # binary | multiclass | survival | regression
    label = "outcome"          # survival: time = "days", event = "died"
    features = []              # empty or absent: every other column
    id_column = "patient_id"   # optional: checked for duplicates, never a feature
    positive = "yes"           # optional (binary): the label value that is class 1
    test_fraction = 0.2        # for sites without a test file: a split of train, stratified
                               # by class (survival: by event; regression: by target quartile)
    seed = 0                   # of that split (not the run's seed: a site's split stays put)
    standardize = "site"       # "site": each site with its own training mean and sd; "none"
                               # (for [data] harmonise in the run: "none", as they are)

    [sites.hospital-a]         # one file per site, already split…
    train = "a_train.csv"
    test = "a_test.csv"
    [sites.hospital-b]
    train = "b.parquet"

or one table for everyone: ``file = "all.csv"`` and ``site_column = "hospital"``. CSV (UTF-8)
and Parquet files are read (a file whose sites name ``images = "folder"`` is an image data set:
:mod:`medfed.data.images`); ``medfed simulate --data consortium-data.toml`` and the run file's
``[data] name`` take the path.

Encoding: a numeric column stays a number (a missing value becomes the site's training mean);
a text column is one-hot encoded over the categories seen across the sites (at most
:data:`MAX_CATEGORIES`; a missing value is all zeros). Rows without a label are left out and
counted in the data set's notes; a regression label is a number (float32 targets), and a value
that is not one is an error naming its file, column and row. Every mistake is a
:class:`~medfed.errors.DataError` that names the file, the rule and the place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.contract import DataContract
from medfed.data.data_file import (
    TableSource,
    describes_images,
    is_data_file,
    read_source,
    read_table,
    read_toml,
)
from medfed.data.images import load_images
from medfed.data.outcomes import class_codes, plain, regression_targets, target_scaling
from medfed.data.partition import quantile_strata, train_test_indices
from medfed.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_CATEGORIES",
    "TableSource",
    "is_data_file",
    "load_data_file",
    "read_source",
    "read_table",
]

MAX_CATEGORIES = 50


def _fail(path: Path, message: str) -> DataError:
    return DataError(f"{path}: {message}")


@dataclass
class _Part:
    """One table of one site (its train or test file, or its rows of the single file)."""

    site: str
    role: str  # "train" | "test" | "all"
    where: str  # the file, for messages
    frame: pd.DataFrame


def _parts(source: TableSource) -> list[_Part]:
    if source.file is not None:
        assert source.site_column is not None
        frame = read_table(source.file)
        if source.site_column not in frame.columns:
            raise _fail(source.file, f"no column {source.site_column!r} (site_column)")
        sites = frame[source.site_column]
        if sites.isna().any():
            row = int(np.flatnonzero(sites.isna().to_numpy())[0]) + 1
            raise _fail(source.file, f"data row {row}: no site in column {source.site_column!r}")
        out = []
        for site in sorted(sites.astype(str).unique()):
            rows = frame[sites.astype(str) == site].drop(columns=[source.site_column])
            out.append(_Part(site, "all", str(source.file), rows))  # the file's row numbers
        return out
    parts = []
    for s in source.sites:
        role = "train" if s.test is not None else "all"
        parts.append(_Part(s.name, role, str(s.train), read_table(s.train)))
        if s.test is not None:
            parts.append(_Part(s.name, "test", str(s.test), read_table(s.test)))
    return parts


def _feature_columns(source: TableSource, parts: list[_Part]) -> list[str]:
    skip = {*source.outcome_columns, source.id_column}
    first = parts[0]
    wanted = list(source.features) or [c for c in first.frame.columns if c not in skip]
    if not wanted:
        raise _fail(source.path, f"{first.where} has no column besides the outcome to learn from")
    for part in parts:
        needed = [*wanted, *source.outcome_columns]
        if source.id_column:
            needed.append(source.id_column)
        missing = [c for c in needed if c not in part.frame.columns]
        if missing:
            raise DataError(
                f"{part.where} (site {part.site}): no column {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; every site's table needs the same columns"
            )
        if not source.features:
            extra = [c for c in part.frame.columns if c not in skip and c not in wanted]
            if extra:
                raise DataError(
                    f"{part.where} (site {part.site}): column {extra[0]!r} is not in "
                    f"{first.where}; list the columns to use in features = [...]"
                )
    return wanted


@dataclass(frozen=True)
class _Encoding:
    numeric: dict[str, bool]
    categories: dict[str, list[str]]
    names: tuple[str, ...]


def _encoding(parts: list[_Part], columns: list[str]) -> _Encoding:
    import pandas as pd

    numeric: dict[str, bool] = {}
    categories: dict[str, list[str]] = {}
    names: list[str] = []
    for col in columns:
        kinds: dict[str, list[str]] = {"number": [], "text": []}
        text_example = ""
        for part in parts:
            values = part.frame[col].dropna()
            if values.empty:
                continue
            as_number = pd.to_numeric(values, errors="coerce")
            if as_number.notna().all():
                kinds["number"].append(part.site)
            else:
                kinds["text"].append(part.site)
                bad = values[as_number.isna()]
                text_example = text_example or (
                    f"{part.where}, data row {int(bad.index[0]) + 1}: {bad.iloc[0]!r}"
                )
        if kinds["number"] and kinds["text"]:
            raise DataError(
                f"column {col!r} holds numbers at {', '.join(sorted(set(kinds['number'])))} but "
                f"text at {', '.join(sorted(set(kinds['text'])))} ({text_example}); fix the values "
                "or make the column text everywhere"
            )
        if not kinds["text"]:
            numeric[col] = True
            names.append(col)
            continue
        seen = sorted({str(v) for part in parts for v in part.frame[col].dropna()})
        if len(seen) > MAX_CATEGORIES:
            raise DataError(
                f"column {col!r} has {len(seen)} distinct text values; medfed one-hot encodes at "
                f"most {MAX_CATEGORIES}: bin it, or leave it out of features"
            )
        numeric[col] = False
        categories[col] = seen
        names.extend(f"{col}={v}" for v in seen)
    return _Encoding(numeric, categories, tuple(names))


def _labels(source: TableSource, part: _Part, codes: dict[str, int]) -> npt.NDArray[np.generic]:
    frame = part.frame
    if source.kind is TaskKind.SURVIVAL:
        import pandas as pd

        t = pd.to_numeric(frame[str(source.time)], errors="coerce").to_numpy(np.float64)
        e = pd.to_numeric(frame[str(source.event)], errors="coerce").to_numpy(np.float64)
        bad_t = np.flatnonzero(~(t >= 0))
        if len(bad_t):
            i = int(bad_t[0])
            raise DataError(
                f"{part.where}, data row {int(frame.index[i]) + 1}: time {source.time!r} must be "
                f"a number >= 0, not {frame[str(source.time)].iloc[i]!r}"
            )
        bad_e = np.flatnonzero(~np.isin(e, (0.0, 1.0)))
        if len(bad_e):
            i = int(bad_e[0])
            raise DataError(
                f"{part.where}, data row {int(frame.index[i]) + 1}: event {source.event!r} must "
                f"be 0 or 1, not {frame[str(source.event)].iloc[i]!r}"
            )
        return np.stack([t, e], axis=1)
    if source.kind is TaskKind.REGRESSION:
        return regression_targets(
            frame[str(source.label)],
            label=str(source.label),
            where=part.where,
            rows=(int(i) + 1 for i in frame.index),
        )
    return np.array([codes[plain(v)] for v in frame[str(source.label)]], dtype=np.int64)


def _features(part: _Part, enc: _Encoding) -> npt.NDArray[np.float64]:
    import pandas as pd

    blocks = []
    for col, is_number in enc.numeric.items():
        values = part.frame[col]
        if is_number:
            blocks.append(pd.to_numeric(values, errors="coerce").to_numpy(np.float64)[:, None])
        else:
            text = values.map(lambda v: None if pd.isna(v) else str(v))
            cats = enc.categories[col]
            blocks.append(np.stack([(text == c).to_numpy(np.float64) for c in cats], axis=1))
    return np.concatenate(blocks, axis=1)


def _check_ids(source: TableSource, parts: list[_Part]) -> None:
    if source.id_column is None:
        return
    by_site: dict[str, dict[Any, str]] = {}
    for part in parts:
        ids = part.frame[source.id_column]
        seen = by_site.setdefault(part.site, {})
        dup = ids[ids.duplicated()]
        if not dup.empty:
            rows = np.flatnonzero((ids == dup.iloc[0]).to_numpy())[:2] + 1
            raise DataError(
                f"{part.where}: patient id {plain(dup.iloc[0])!r} appears twice in column "
                f"{source.id_column!r} (data rows {rows[0]} and {rows[1]})"
            )
        for value in ids.dropna():
            if value in seen:
                raise DataError(
                    f"patient id {plain(value)!r} of site {part.site} is in both "
                    f"{seen[value]} and {part.where}: a patient must be in the training or the "
                    "test file, not both"
                )
            seen[value] = part.where


def load_data_file(path: str | Path, *, raw: bool = False) -> FederatedDataset:
    """The data set a data set file describes, split into its sites (see the module docs;
    a file whose sites are images folders: :mod:`medfed.data.images`).

    ``raw``: the numbers as the tables hold them — a missing number stays NaN instead of
    becoming the site's training mean, and no site standardises alone — for harmonisation
    (which fills gaps with the federation's mean) and the data-quality report.
    """
    if describes_images(read_toml(path)[1]):
        return load_images(path)
    source = read_source(path)
    keep_missing = raw
    if raw:
        source = replace(source, standardize="none")
    parts = _parts(source)
    if source.contract is not None:
        return _load_under_contract(source, source.contract, parts, keep_missing=keep_missing)
    columns = _feature_columns(source, parts)
    _check_ids(source, parts)
    dropped: dict[str, int] = {}
    kept = []
    for part in parts:
        missing = part.frame[list(source.outcome_columns)].isna().any(axis=1)
        if missing.any():
            dropped[part.site] = dropped.get(part.site, 0) + int(missing.sum())
        kept.append(_Part(part.site, part.role, part.where, part.frame[~missing]))
    parts = kept
    codes: dict[Any, int] = {}
    n_classes = 2
    if source.kind in (TaskKind.BINARY, TaskKind.MULTICLASS):
        label = str(source.label)
        observed = (v for part in parts for v in part.frame[label].dropna())
        codes, n_classes = class_codes(source.kind, label, source.positive, observed, source.path)
    enc = _encoding(parts, columns)
    sites = []
    for index, name in enumerate(dict.fromkeys(p.site for p in parts)):
        mine = {p.role: p for p in parts if p.site == name}
        sites.append(
            _site(
                source,
                name,
                index,
                mine,
                lambda part: (_features(part, enc), _labels(source, part, codes)),
                keep_missing=keep_missing,
            )
        )
    filled = "kept for harmonisation" if keep_missing else "the site's training mean"
    notes = {
        "source": str(source.path),
        "encoding": f"{sum(enc.numeric.values())} numeric column(s), "
        f"{len(enc.categories)} one-hot encoded; missing numbers: {filled}",
        "standardize": "each site with its own training mean and sd"
        if source.standardize == "site"
        else "none",
    }
    if dropped:
        notes["rows without an outcome (left out)"] = ", ".join(
            f"{s}: {n}" for s, n in dropped.items()
        )
    center, scale = 0.0, 1.0
    if source.kind is TaskKind.REGRESSION:
        center, scale = target_scaling(s.y_train for s in sites)
        notes["target"] = f"centre {center:.6g}, scale {scale:.6g} (the sites' training targets)"
    spec = DataSpec(
        kind=source.kind,
        input_shape=(len(enc.names),),
        n_classes=n_classes,
        feature_names=enc.names,
        target_center=center,
        target_scale=scale,
    )
    return FederatedDataset(
        name=source.path.stem,
        spec=spec,
        sites=tuple(sites),
        description=f"tables from {source.path.name}",
        source=str(source.path),
        notes=notes,
    )


_Encode = Callable[["_Part"], tuple[npt.NDArray[np.float64], npt.NDArray[Any]]]


def _site(
    source: TableSource,
    name: str,
    index: int,
    parts: dict[str, _Part],
    encode: _Encode,
    *,
    keep_missing: bool = False,
) -> SiteData:
    if "all" in parts:
        part = parts["all"]
        x, y = encode(part)
        if len(y) < 2:
            raise DataError(f"{part.where} (site {name}): fewer than 2 rows with an outcome")
        strata: npt.NDArray[Any] | None = y  # classes; survival: the event; regression: quartiles
        if source.kind is TaskKind.SURVIVAL:
            strata = y[:, 1]
        elif source.kind is TaskKind.REGRESSION:  # the target's quartiles, on enough rows
            strata = quantile_strata(y, bins=4) if len(y) >= 40 else None
        rng = np.random.default_rng([source.seed, index])
        train, test = train_test_indices(
            len(y), test_fraction=source.test_fraction, rng=rng, labels=strata
        )
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    else:
        x_train, y_train = encode(parts["train"])
        x_test, y_test = encode(parts["test"])
        if len(y_train) == 0:
            raise DataError(f"{parts['train'].where} (site {name}): no row with an outcome")
    if not keep_missing:
        mean = np.nanmean(x_train, axis=0) if len(x_train) else np.zeros(x_train.shape[1])
        mean = np.where(np.isnan(mean), 0.0, mean)  # a column missing everywhere at this site
        x_train = np.where(np.isnan(x_train), mean, x_train)
        x_test = np.where(np.isnan(x_test), mean, x_test)
    if source.standardize == "site":
        sd = x_train.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        x_train, x_test = (x_train - mean) / sd, (x_test - mean) / sd
    for what, arr in (("training", x_train), ("test", x_test)):
        if np.isinf(arr).any():
            raise DataError(f"site {name}: a {what} feature is infinite after encoding")
    return SiteData(
        name=name,
        x_train=x_train.astype(np.float32),
        y_train=y_train,
        x_test=x_test.astype(np.float32),
        y_test=y_test,
        description=f"{len(y_train)} training and {len(y_test)} test rows",
    )


def _load_under_contract(
    source: TableSource, contract: DataContract, parts: list[_Part], *, keep_missing: bool
) -> FederatedDataset:
    """Each site's tables checked against the contract; a site that fails is left out, with
    its reasons in the data set's notes (and an error when no site passes)."""
    failed: dict[str, str] = {}
    for part in parts:
        report = contract.check(part.frame)
        if not report.passed:
            failed[part.site] = f"{part.where} {report}"
    passing = [p for p in parts if p.site not in failed]
    if not passing:
        raise DataError("no site passes the data contract:\n" + "\n".join(failed.values()))
    _check_ids(source, passing)  # a patient in both a site's training and test files
    dropped: dict[str, int] = {}
    if contract.missing == "drop":
        kept = []
        for part in passing:
            gaps = part.frame[[c.name for c in contract.features]].isna().any(axis=1)
            if gaps.any():
                dropped[part.site] = dropped.get(part.site, 0) + int(gaps.sum())
            kept.append(_Part(part.site, part.role, part.where, part.frame[~gaps]))
        passing = kept
    sites = [
        _site(
            source,
            name,
            index,
            {p.role: p for p in passing if p.site == name},
            lambda part: contract.encode(part.frame),
            keep_missing=keep_missing,
        )
        for index, name in enumerate(dict.fromkeys(p.site for p in parts))
        if name not in failed
    ]
    notes = {
        "source": str(source.path),
        "contract": f"{contract.title} (sha256 {contract.sha256[:12]}…)",
        "standardize": "each site with its own training mean and sd"
        if source.standardize == "site"
        else "none",
    }
    for site, reason in failed.items():
        notes[f"left out: {site}"] = reason
    if dropped:
        notes["rows with a missing feature (dropped)"] = ", ".join(
            f"{s}: {n}" for s, n in dropped.items()
        )
    return FederatedDataset(
        name=source.path.stem,
        spec=contract.spec(),
        sites=tuple(sites),
        description=f"tables from {source.path.name} under {contract.title}",
        source=str(source.path),
        notes=notes,
    )
