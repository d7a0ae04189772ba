"""What a researcher asks of the federation's data, and what one exchange asks of a site.

A :class:`StatsQuery` is the researcher's question (which features, which statistics, the
release rules). It is answered in one or two exchanges (:class:`SiteQuery`), each a plain
JSON message that travels in a ``STATS`` instruction:

1. **moments** — records, present and missing counts, sums and sums of squares per feature
   (and the follow-up time's, for a survival curve). Always.
2. **shapes** — only for histograms, quantiles, Kaplan–Meier curves and an accurate variance:
   histograms on bin edges shared by every site, a fine histogram for quantiles, event and
   censoring counts on a shared time grid, and sums of squares centred on the federation's
   mean. The edges, grid and centre are computed by the coordinator from the first exchange's
   *released* federation-wide figures only, so they are the same at every site and reveal
   nothing beyond those figures.

Every number here is public (it is shown to the data steward by ``medfed node inspect``).
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medfed.errors import ConfigError

__all__ = ["DEFAULT_MIN_COUNT", "SiteQuery", "Statistic", "StatsQuery"]

DEFAULT_MIN_COUNT = 10
MAX_FEATURES = 1000
MAX_BINS = 200
MAX_FINE_BINS = 4000
MAX_GRID = 2000


class Statistic(enum.StrEnum):
    COUNT = "count"  # records with a value, and missing values
    MEAN = "mean"
    VARIANCE = "variance"  # and the standard deviation
    HISTOGRAM = "histogram"
    QUANTILES = "quantiles"
    SURVIVAL = "survival"  # Kaplan–Meier curve of the data set's time/event outcome

    @classmethod
    def parse(cls, value: str) -> Statistic:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ConfigError(f"unknown statistic {value!r}; choose from {names}") from None


_DEFAULT_STATISTICS = (Statistic.COUNT, Statistic.MEAN, Statistic.VARIANCE)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@dataclass(frozen=True)
class StatsQuery:
    """The researcher's question.

    ``features``: empty means every feature of the data set. ``bins``: histogram bins between
    the federation's mean ± 3 sd (plus two open tail bins), unless ``edges`` gives a feature's
    edges. ``quantiles`` are read from a fine histogram (``fine_bins`` bins over mean ± 5 sd):
    each is within one fine bin (10 sd / ``fine_bins``) of the pooled order statistic
    x_(⌈qn⌉) (numpy's ``inverted_cdf`` quantile).
    ``min_count``: any released count below it (and above zero) is suppressed, with
    complementary suppression (:mod:`medfed.data.statistics.suppression`). ``epsilon``: each
    site adds Gaussian noise to what it sends so that its release is (ε, ``delta``)-DP for its
    own records; this needs each feature's public ``ranges`` (values are clipped to them).
    ``per_site``: release each site's figures too (never under secure aggregation, where the
    coordinator only ever learns sums). ``split``: "all" records, or the training split only
    (what harmonisation learns from).
    """

    features: tuple[str, ...] = ()
    statistics: tuple[Statistic, ...] = _DEFAULT_STATISTICS
    bins: int = 10
    edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75)
    fine_bins: int = 1000
    time_points: int = 20
    time_grid: tuple[float, ...] = ()
    min_count: int = DEFAULT_MIN_COUNT
    epsilon: float | None = None
    delta: float = 1e-6
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    per_site: bool = True
    split: str = "all"

    def __post_init__(self) -> None:
        _check(len(self.features) <= MAX_FEATURES, f"at most {MAX_FEATURES} features per query")
        _check(len(self.statistics) > 0, "a query asks for at least one statistic")
        _check(1 <= self.bins <= MAX_BINS, f"bins must be between 1 and {MAX_BINS}")
        _check(
            10 <= self.fine_bins <= MAX_FINE_BINS,
            f"fine_bins must be between 10 and {MAX_FINE_BINS}",
        )
        _check(2 <= self.time_points <= MAX_GRID, f"time_points must be between 2 and {MAX_GRID}")
        _check(len(self.time_grid) <= MAX_GRID, f"a time grid has at most {MAX_GRID} points")
        _check(
            all(_finite(t) for t in self.time_grid)
            and all(a < b for a, b in zip(self.time_grid, self.time_grid[1:], strict=False)),
            "the time grid must be finite and strictly increasing",
        )
        _check(all(0 < q < 1 for q in self.quantiles), "quantiles must be strictly between 0 and 1")
        _check(1 <= self.min_count <= 10**6, "min_count must be between 1 and 1000000")
        _check(
            self.epsilon is None or (_finite(self.epsilon) and 0 < self.epsilon <= 100),
            "epsilon must be in (0, 100]",
        )
        _check(0 < self.delta < 1e-2, "delta must be in (0, 0.01)")
        _check(self.split in ("all", "train"), 'split must be "all" or "train"')
        for name, e in self.edges.items():
            _check(
                1 <= len(e) <= MAX_BINS + 1
                and all(_finite(v) for v in e)
                and all(a < b for a, b in itertools.pairwise(e)),
                f"the edges of {name!r} must be 1 to {MAX_BINS + 1} finite increasing numbers",
            )
        for name, r in self.ranges.items():
            _check(
                len(r) == 2 and _finite(r[0]) and _finite(r[1]) and r[0] < r[1],
                f"the range of {name!r} must be two finite numbers, low < high",
            )

    def wants(self, statistic: Statistic) -> bool:
        return statistic in self.statistics

    @property
    def needs_shapes(self) -> bool:
        """Whether a second exchange is needed (histograms, quantiles, survival, variance)."""
        return any(
            s in self.statistics
            for s in (Statistic.HISTOGRAM, Statistic.QUANTILES, Statistic.SURVIVAL)
        )

    @property
    def passes(self) -> int:
        return 2 if self.needs_shapes else 1


@dataclass(frozen=True)
class SiteQuery:
    """One exchange's question to a site: JSON in the ``STATS`` instruction's message.

    ``stage`` is "moments" or "shapes". ``centre``: per feature, the value sums of squares
    are taken about (shapes). ``edges`` and ``fine_edges``: shared histogram edges per
    feature. ``time_grid``: the shared grid of the survival counts (empty: none).
    ``noise_multiplier``: the Gaussian noise the site adds (σ, in units of each block's
    sensitivity × √blocks; None: no noise), and the ``epsilon``/``delta`` it accounts for.
    """

    stage: str
    features: tuple[str, ...]
    split: str = "all"
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    centre: Mapping[str, float] = field(default_factory=dict)
    edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    fine_edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    survival: bool = False
    time_grid: tuple[float, ...] = ()
    noise_multiplier: float | None = None
    epsilon: float | None = None
    delta: float = 1e-6
    within: bool = False  # also Σ(x − site mean)² (moments; harmonisation's ComBat)

    def __post_init__(self) -> None:
        _check(self.stage in ("moments", "shapes"), 'stage must be "moments" or "shapes"')
        _check(self.split in ("all", "train"), 'split must be "all" or "train"')
        _check(len(self.features) <= MAX_FEATURES, f"at most {MAX_FEATURES} features per query")
        _check(
            self.noise_multiplier is None
            or (_finite(self.noise_multiplier) and self.noise_multiplier > 0),
            "the noise multiplier must be a positive number",
        )
        if self.noise_multiplier is not None:
            missing = [f for f in self.features if f not in self.ranges]
            _check(
                not missing and (not self.survival or "time" in self.ranges),
                "DP noise needs a public range for every feature (and 'time' for survival); "
                f"missing: {', '.join(missing) or 'time'}",
            )
        for name, e in (*self.edges.items(), *self.fine_edges.items()):
            _check(
                len(e) <= MAX_FINE_BINS + 1 and all(_finite(v) for v in e),
                f"the edges of {name!r} must be at most {MAX_FINE_BINS + 1} finite numbers",
            )
        _check(
            len(self.time_grid) <= MAX_GRID and all(_finite(t) for t in self.time_grid),
            f"a time grid has at most {MAX_GRID} finite points",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "features": list(self.features),
            "split": self.split,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "centre": dict(self.centre),
            "edges": {k: list(v) for k, v in self.edges.items()},
            "fine_edges": {k: list(v) for k, v in self.fine_edges.items()},
            "survival": self.survival,
            "time_grid": list(self.time_grid),
            "noise_multiplier": self.noise_multiplier,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "within": self.within,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SiteQuery:
        """Parse a message from the coordinator; anything malformed is a ConfigError."""
        try:

            def floats(v: Sequence[Any]) -> tuple[float, ...]:
                return tuple(float(x) for x in v)

            ranges = {str(k): floats(v) for k, v in dict(raw.get("ranges", {})).items()}
            return cls(
                stage=str(raw["stage"]),
                features=tuple(str(f) for f in raw["features"]),
                split=str(raw.get("split", "all")),
                ranges={k: (v[0], v[1]) for k, v in ranges.items() if len(v) == 2},
                centre={str(k): float(v) for k, v in dict(raw.get("centre", {})).items()},
                edges={str(k): floats(v) for k, v in dict(raw.get("edges", {})).items()},
                fine_edges={str(k): floats(v) for k, v in dict(raw.get("fine_edges", {})).items()},
                survival=bool(raw.get("survival", False)),
                time_grid=floats(raw.get("time_grid", ())),
                noise_multiplier=(
                    None if raw.get("noise_multiplier") is None else float(raw["noise_multiplier"])
                ),
                epsilon=None if raw.get("epsilon") is None else float(raw["epsilon"]),
                delta=float(raw.get("delta", 1e-6)),
                within=bool(raw.get("within", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"a statistics query is malformed: {exc}") from None
