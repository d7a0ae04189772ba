"""A query and its released result as JSON: what a statistics job stores and announces.

A federation's statistics job carries the researcher's :class:`~.query.StatsQuery` as JSON
(the data steward approves exactly that text) and the coordinator stores the released
:class:`~.answer.StatsResult` as JSON with the job, so that ``medfed stats --job`` shows the
same tables as a simulation. Only released (suppressed) figures are ever in a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medfed.data.statistics.answer import StatsResult
from medfed.data.statistics.query import Statistic, StatsQuery
from medfed.data.statistics.release import FEDERATION, FeatureSummary, Histogram, RowSummary
from medfed.data.statistics.survival import SurvivalCurve
from medfed.errors import ConfigError

__all__ = ["query_from_json", "query_to_json", "result_from_json"]


def query_to_json(query: StatsQuery) -> dict[str, Any]:
    """The query as plain JSON (what a job announces and a data steward approves)."""
    return {
        "features": list(query.features),
        "statistics": [s.value for s in query.statistics],
        "bins": query.bins,
        "edges": {k: list(v) for k, v in query.edges.items()},
        "quantiles": list(query.quantiles),
        "fine_bins": query.fine_bins,
        "time_points": query.time_points,
        "time_grid": list(query.time_grid),
        "min_count": query.min_count,
        "epsilon": query.epsilon,
        "delta": query.delta,
        "ranges": {k: list(v) for k, v in query.ranges.items()},
        "per_site": query.per_site,
        "split": query.split,
    }


_DEFAULT = {"statistics": [s.value for s in StatsQuery().statistics]}


def _floats(v: Any) -> tuple[float, ...]:
    if not isinstance(v, list | tuple):
        raise TypeError("expected a list of numbers")
    return tuple(float(x) for x in v)


def query_from_json(raw: Mapping[str, Any]) -> StatsQuery:
    """A query from its JSON (another party's input); anything malformed is a ConfigError."""
    try:
        if not isinstance(raw, Mapping):
            raise TypeError("a query is a JSON object")
        known = set(query_to_json(StatsQuery()))
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
        ranges = {str(k): _floats(v) for k, v in dict(raw.get("ranges", {})).items()}
        if any(len(v) != 2 for v in ranges.values()):
            raise ValueError("a range is two numbers, low and high")
        epsilon = raw.get("epsilon")
        return StatsQuery(
            features=tuple(str(f) for f in raw.get("features", [])),
            statistics=tuple(
                Statistic.parse(str(s)) for s in raw.get("statistics", _DEFAULT["statistics"])
            ),
            bins=_int(raw.get("bins", 10)),
            edges={str(k): _floats(v) for k, v in dict(raw.get("edges", {})).items()},
            quantiles=_floats(raw.get("quantiles", [0.25, 0.5, 0.75])),
            fine_bins=_int(raw.get("fine_bins", 1000)),
            time_points=_int(raw.get("time_points", 20)),
            time_grid=_floats(raw.get("time_grid", [])),
            min_count=_int(raw.get("min_count", 10)),
            epsilon=None if epsilon is None else float(epsilon),
            delta=float(raw.get("delta", 1e-6)),
            ranges={k: (v[0], v[1]) for k, v in ranges.items()},
            per_site=_bool(raw.get("per_site", True)),
            split=str(raw.get("split", "all")),
        )
    except ConfigError as exc:
        raise ConfigError(f"the statistics query is refused: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ConfigError(f"the statistics query is malformed: {exc}") from None


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r:.40}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r:.40}")
    return v


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _feature(name: str, raw: Mapping[str, Any]) -> FeatureSummary:
    h = raw.get("histogram")
    histogram = (
        None
        if h is None
        else Histogram(_floats(h["edges"]), tuple(_opt_int(c) for c in h["counts"]))
    )
    return FeatureSummary(
        feature=name,
        count=_opt_int(raw.get("count")),
        missing=_opt_int(raw.get("missing")),
        mean=_opt_float(raw.get("mean")),
        variance=_opt_float(raw.get("variance")),
        histogram=histogram,
        quantiles={float(q): _opt_float(v) for q, v in dict(raw.get("quantiles", {})).items()},
        withheld=tuple(str(w) for w in raw.get("withheld", [])),
    )


def _row(name: str, raw: Mapping[str, Any]) -> RowSummary:
    s = raw.get("survival")
    survival = None
    if s is not None:
        survival = SurvivalCurve(
            times=_floats(s["times"]),
            at_risk=tuple(int(x) for x in s["at_risk"]),
            events=tuple(int(x) for x in s["events"]),
            censored=tuple(int(x) for x in s["censored"]),
            survival=_floats(s["survival"]),
        )
    features = {str(k): _feature(str(k), v) for k, v in dict(raw["features"]).items()}
    return RowSummary(name, _opt_int(raw.get("records")), features, survival)


def result_from_json(raw: Mapping[str, Any], query: StatsQuery) -> StatsResult:
    """A released result from :meth:`StatsResult.to_json` (and the query it answered)."""
    try:
        rows = {FEDERATION: _row(FEDERATION, raw["federation"])}
        rows.update({str(k): _row(str(k), v) for k, v in dict(raw.get("per_site", {})).items()})
        return StatsResult(
            query=query,
            features=tuple(str(f) for f in raw["features"]),
            sites=tuple(str(s) for s in raw["sites"]),
            rows=rows,
            exchanges=int(raw["exchanges"]),
            secure=bool(raw["secure_aggregation"]),
            epsilon=_opt_float(raw.get("epsilon")),
            delta=_opt_float(raw.get("delta")),
            failures={str(k): str(v) for k, v in dict(raw.get("failures", {})).items()},
            notes=tuple(str(n) for n in raw.get("notes", [])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"the stored statistics result is malformed: {exc}") from None
