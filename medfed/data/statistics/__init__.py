"""Federated statistics without training: the site's computation and the release.

Pure (numpy, no I/O): a site turns its table into additive counts and sums
(:mod:`.contribution`), the coordinator adds them (in the clear or through secure
aggregation, :mod:`.exact`), and :mod:`.release` turns the sums into figures with small counts
suppressed. :func:`answer` runs the one- or two-exchange flow over any transport.
"""

from medfed.data.statistics.answer import Gathered, StatsResult, answer, answer_tables
from medfed.data.statistics.contribution import Contribution, contribution
from medfed.data.statistics.query import DEFAULT_MIN_COUNT, SiteQuery, Statistic, StatsQuery
from medfed.data.statistics.release import FEDERATION, FeatureSummary, Histogram, RowSummary
from medfed.data.statistics.survival import SurvivalCurve, kaplan_meier
from medfed.data.statistics.table import SiteTable, outcome_names, site_table

__all__ = [
    "DEFAULT_MIN_COUNT",
    "FEDERATION",
    "Contribution",
    "FeatureSummary",
    "Gathered",
    "Histogram",
    "RowSummary",
    "SiteQuery",
    "SiteTable",
    "Statistic",
    "StatsQuery",
    "StatsResult",
    "SurvivalCurve",
    "answer",
    "answer_tables",
    "contribution",
    "kaplan_meier",
    "outcome_names",
    "site_table",
]
