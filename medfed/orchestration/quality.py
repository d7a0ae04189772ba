"""A data-quality report across sites, built on the federated statistics (nothing else).

Per site and feature: missingness (fraction of records without a value), ranges (the
quantiles q0.05, q0.5, q0.95 — never a minimum or maximum, which would be one patient's
value), the label's prevalence (class fractions; a regression target's mean and sd; for
survival the event rate and the median follow-up time of all records, censored or not) and
the shift of each site from the federation: the standardised mean difference
``|mean_site − mean_fed| / sd_fed`` and the population stability index on the federation's
shared histogram bins, ``Σ (p_site − p_fed) · ln(p_site / p_fed)`` (a proportion of 0 counts as
:data:`PSI_FLOOR`). The federation's figures include the site's own records.

Every figure comes from one statistics query
(:func:`~medfed.orchestration.statistics.run_statistics`: two exchanges, counts below
``min_count`` suppressed with complementary suppression), so a
site's row is shown only where the release shows it: a site with fewer records than the
minimum count declines the query and is listed as not shown; a suppressed count gives no
fraction. The label's class counts are histogram cells (bin edges between the class indices),
so a class with fewer than ``min_count`` records at a site is suppressed like any count. A
PSI whose site or federation cells are partly suppressed is computed with those cells merged
into one (their total is the released count minus the released cells); none when fewer than
two cells are left. PSI is noisy for a small site (a released zero beside a full federation
cell weighs ``ln(p_fed / PSI_FLOOR)``): read it with the site's record count.

Under secure aggregation the coordinator learns only sums over the sites: the report then has
the federation's figures only (missingness flags on them too) and says so in its notes. Shift
needs each site's figures; comparing a site with the released federation figures at the site
itself (where its own figures are not a disclosure) is left for later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medfed.data.base import DataSpec, TaskKind
from medfed.data.statistics import (
    DEFAULT_MIN_COUNT,
    FEDERATION,
    FeatureSummary,
    RowSummary,
    Statistic,
    StatsQuery,
    StatsResult,
    outcome_names,
)
from medfed.data.statistics.table import feature_names
from medfed.errors import ConfigError
from medfed.orchestration.backends.base import Backend
from medfed.orchestration.secure_round import SecureAggregation
from medfed.orchestration.statistics import run_statistics

__all__ = [
    "PSI_FLOOR",
    "QUANTILES",
    "FeatureQuality",
    "Flag",
    "LabelQuality",
    "QualityReport",
    "QualityThresholds",
    "RowQuality",
    "quality_from_result",
    "quality_query",
    "quality_report",
    "quality_spec",
]

QUANTILES = (0.05, 0.5, 0.95)
PSI_FLOOR = 1e-4
_STATISTICS = (
    Statistic.COUNT,
    Statistic.MEAN,
    Statistic.VARIANCE,
    Statistic.HISTOGRAM,
    Statistic.QUANTILES,
)


@dataclass(frozen=True)
class QualityThresholds:
    """A site's feature is flagged above any of these (fractions, not percent)."""

    smd: float = 0.2
    missing: float = 0.2
    psi: float = 0.25


@dataclass(frozen=True)
class Flag:
    """One check over its threshold: ``check`` is "missing", "smd" or "psi"."""

    site: str
    feature: str
    check: str
    value: float
    threshold: float


@dataclass(frozen=True)
class FeatureQuality:
    """One feature in one row; None: suppressed (or, for smd/psi, the federation's row)."""

    feature: str
    count: int | None
    missing: int | None
    missing_fraction: float | None
    mean: float | None
    sd: float | None
    quantiles: Mapping[str, float | None]
    smd: float | None = None
    psi: float | None = None


@dataclass(frozen=True)
class LabelQuality:
    """The outcome in one row: ``classes`` (class index → fraction; binary/multiclass),
    ``mean``/``sd`` (regression), ``event_rate``/``median_follow_up`` (survival)."""

    kind: str
    count: int | None
    classes: Mapping[str, float | None] = field(default_factory=dict)
    mean: float | None = None
    sd: float | None = None
    event_rate: float | None = None
    median_follow_up: float | None = None


@dataclass(frozen=True)
class RowQuality:
    """The federation's or one site's figures."""

    name: str
    records: int | None
    features: Mapping[str, FeatureQuality]
    label: LabelQuality | None


@dataclass(frozen=True)
class QualityReport:
    """The report: the federation's row, each shown site's, the flags and how it was made."""

    kind: str
    features: tuple[str, ...]
    min_count: int
    secure: bool
    thresholds: QualityThresholds
    federation: RowQuality
    sites: Mapping[str, RowQuality]
    flags: tuple[Flag, ...]
    not_shown: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        def row(r: RowQuality) -> dict[str, Any]:
            return {
                "records": r.records,
                "features": {
                    k: {
                        "count": f.count,
                        "missing": f.missing,
                        "missing_fraction": f.missing_fraction,
                        "mean": f.mean,
                        "sd": f.sd,
                        "quantiles": dict(f.quantiles),
                        "smd": f.smd,
                        "psi": f.psi,
                    }
                    for k, f in r.features.items()
                },
                "label": None
                if r.label is None
                else {
                    "kind": r.label.kind,
                    "count": r.label.count,
                    "classes": dict(r.label.classes),
                    "mean": r.label.mean,
                    "sd": r.label.sd,
                    "event_rate": r.label.event_rate,
                    "median_follow_up": r.label.median_follow_up,
                },
            }

        t = self.thresholds
        return {
            "kind": self.kind,
            "features": list(self.features),
            "min_count": self.min_count,
            "secure_aggregation": self.secure,
            "thresholds": {"smd": t.smd, "missing": t.missing, "psi": t.psi},
            "federation": row(self.federation),
            "sites": {k: row(v) for k, v in self.sites.items()},
            "flags": [
                {
                    "site": f.site,
                    "feature": f.feature,
                    "check": f.check,
                    "value": f.value,
                    "threshold": f.threshold,
                }
                for f in self.flags
            ],
            "not_shown": dict(self.not_shown),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> QualityReport:
        def row(name: str, r: Mapping[str, Any]) -> RowQuality:
            lab = r.get("label")
            return RowQuality(
                name=name,
                records=r["records"],
                features={
                    k: FeatureQuality(feature=k, **{**f, "quantiles": dict(f["quantiles"])})
                    for k, f in r["features"].items()
                },
                label=None if lab is None else LabelQuality(**{**lab, "classes": lab["classes"]}),
            )

        return cls(
            kind=str(raw["kind"]),
            features=tuple(raw["features"]),
            min_count=int(raw["min_count"]),
            secure=bool(raw["secure_aggregation"]),
            thresholds=QualityThresholds(**raw["thresholds"]),
            federation=row(FEDERATION, raw["federation"]),
            sites={k: row(k, v) for k, v in raw["sites"].items()},
            flags=tuple(Flag(**f) for f in raw["flags"]),
            not_shown=dict(raw["not_shown"]),
            notes=tuple(raw["notes"]),
        )


def outcome_edges(spec: DataSpec) -> dict[str, tuple[float, ...]]:
    """Histogram edges that put each class (or event/censored) in a cell of its own."""
    names = outcome_names(spec)
    if spec.kind in (TaskKind.BINARY, TaskKind.MULTICLASS):
        return {names[0]: tuple(k + 0.5 for k in range(spec.n_classes - 1))}
    if spec.kind is TaskKind.SURVIVAL:
        return {names[0]: (0.5,)}
    return {}


def _fraction(part: int | None, whole: int | None) -> float | None:
    return None if part is None or whole is None or whole == 0 else part / whole


def _psi(site: FeatureSummary, fed: FeatureSummary) -> float | None:
    """PSI on the shared bins; cells suppressed in either row merged into one."""
    hs, hf = site.histogram, fed.histogram
    if hs is None or hf is None or site.count is None or fed.count is None:
        return None
    if site.count == 0 or fed.count == 0:
        return None
    open_ = [i for i, (a, b) in enumerate(zip(hs.counts, hf.counts, strict=True))
             if a is not None and b is not None]  # fmt: skip
    pairs = [(float(hs.counts[i] or 0), float(hf.counts[i] or 0)) for i in open_]
    if len(open_) < len(hs.counts):
        rest_s = site.count - sum(a for a, _ in pairs)
        rest_f = fed.count - sum(b for _, b in pairs)
        pairs.append((max(rest_s, 0.0), max(rest_f, 0.0)))
    if len(pairs) < 2:  # everything merged: nothing to compare
        return None
    total = 0.0
    for a, b in pairs:
        p, q = max(a / site.count, PSI_FLOOR), max(b / fed.count, PSI_FLOOR)
        total += (p - q) * math.log(p / q)
    return total


def _feature(f: FeatureSummary, fed: FeatureSummary | None) -> FeatureQuality:
    records = None if f.count is None or f.missing is None else f.count + f.missing
    smd = psi = None
    if fed is not None:
        if f.mean is not None and fed.mean is not None and fed.sd is not None and fed.sd > 0:
            smd = abs(f.mean - fed.mean) / fed.sd
        psi = _psi(f, fed)
    return FeatureQuality(
        feature=f.feature,
        count=f.count,
        missing=f.missing,
        missing_fraction=_fraction(f.missing, records),
        mean=f.mean,
        sd=f.sd,
        quantiles={f"{q:g}": f.quantiles.get(q) for q in QUANTILES},
        smd=smd,
        psi=psi,
    )


def _label(row: RowSummary, spec: DataSpec) -> LabelQuality | None:
    names = outcome_names(spec)
    if not names or names[0] not in row.features:
        return None
    first = row.features[names[0]]
    kind = str(spec.kind)
    if spec.kind is TaskKind.REGRESSION:
        return LabelQuality(kind, first.count, mean=first.mean, sd=first.sd)
    cells = () if first.histogram is None else first.histogram.counts
    if spec.kind is TaskKind.SURVIVAL:
        follow = row.features.get(names[1])
        events = cells[1] if len(cells) == 2 else None
        median = None if follow is None else follow.quantiles.get(0.5)
        return LabelQuality(kind, first.count, event_rate=_fraction(events, first.count),
                            median_follow_up=median)  # fmt: skip
    classes = {str(k): _fraction(c, first.count) for k, c in enumerate(cells)}
    return LabelQuality(kind, first.count, classes=classes)


def quality_from_result(
    result: StatsResult,
    spec: DataSpec,
    features: Sequence[str],
    *,
    thresholds: QualityThresholds | None = None,
) -> QualityReport:
    """The report from a released statistics result (the query of :func:`quality_report`)."""
    t = thresholds or QualityThresholds()
    fed_row = result.federation

    def row(r: RowSummary, shift: bool) -> RowQuality:
        feats = {
            n: _feature(r.features[n], fed_row.features[n] if shift else None) for n in features
        }
        return RowQuality(r.name, r.records, feats, _label(r, spec))

    federation = row(fed_row, False)
    sites = {name: row(r, True) for name, r in result.per_site.items()}
    flags: list[Flag] = []
    for name, r in [(FEDERATION, federation), *sites.items()]:
        for f in r.features.values():
            for check, value, limit in (
                ("missing", f.missing_fraction, t.missing),
                ("smd", f.smd, t.smd),
                ("psi", f.psi, t.psi),
            ):
                if value is not None and value > limit:
                    flags.append(Flag(name, f.feature, check, value, limit))
    notes = list(result.notes)
    if result.secure:
        notes.append(
            "per-site figures, shift and per-site flags are not available under secure "
            "aggregation; the figures are the federation's"
        )
    notes.append(
        f"counts below {result.query.min_count} are suppressed (with complementary "
        "suppression); ranges are quantiles, never a minimum or maximum"
    )
    return QualityReport(
        kind=str(spec.kind),
        features=tuple(features),
        min_count=result.query.min_count,
        secure=result.secure,
        thresholds=t,
        federation=federation,
        sites=sites,
        flags=tuple(flags),
        not_shown=dict(result.failures),
        notes=tuple(notes),
    )


def quality_query(
    spec: DataSpec, features: Sequence[str], *, min_count: int = DEFAULT_MIN_COUNT
) -> StatsQuery:
    """The statistics query behind the report: the features and the outcome's pseudo-features."""
    return StatsQuery(
        features=(*features, *outcome_names(spec)),
        statistics=_STATISTICS,
        edges=outcome_edges(spec),
        quantiles=QUANTILES,
        min_count=min_count,
        per_site=True,
    )


def quality_spec(query: StatsQuery) -> tuple[DataSpec, tuple[str, ...]]:
    """The data shape and features a report's query was made for (what a statistics job
    stores is the query; ConfigError when it is not the query of :func:`quality_query`).

    The shape is the one the query tells: a two-class label reads as binary (a multiclass
    data set of two classes would report its kind as binary)."""
    names = query.features
    if len(names) >= 2 and names[-2].startswith("event") and names[-1].startswith("follow-up"):
        kind, features = TaskKind.SURVIVAL, names[:-2]
        n_classes = 2
    elif names and names[-1].startswith("label"):
        features = names[:-1]
        edges = query.edges.get(names[-1])
        n_classes = 2 if edges is None else len(edges) + 1
        if edges is None:
            kind = TaskKind.REGRESSION
        else:
            kind = TaskKind.BINARY if n_classes == 2 else TaskKind.MULTICLASS
    else:
        kind, features, n_classes = TaskKind.SEGMENTATION, names, 2
    spec = None
    if kind is not TaskKind.SEGMENTATION and features:
        spec = DataSpec(kind, (len(features),), n_classes=n_classes, feature_names=features)
    if spec is None or quality_query(spec, features, min_count=query.min_count) != query:
        raise ConfigError(
            "that job's query is not a data-quality report's; see its figures with "
            "medfed stats --kit KIT --job ID"
        )
    return spec, tuple(features)


def quality_report(
    backend: Backend,
    spec: DataSpec,
    *,
    features: Sequence[str] = (),
    secure: SecureAggregation | None = None,
    min_count: int = DEFAULT_MIN_COUNT,
    thresholds: QualityThresholds | None = None,
    timeout: float | None = None,
) -> QualityReport:
    """The data-quality report over the sites of ``backend`` (``features``: none means every
    feature of ``spec``); the sites must answer ``STATS`` (a ``SiteRuntime`` with ``stats``)."""
    names = tuple(features) or feature_names(spec)
    query = quality_query(spec, names, min_count=min_count)
    available = (*feature_names(spec), *outcome_names(spec))
    result = run_statistics(backend, query, features=available, secure=secure, timeout=timeout)
    return quality_from_result(result, spec, names, thresholds=thresholds)
