"""The ``STATS`` operation at a site: answer one exchange of a federated statistics query.

The query is in the instruction's message (:class:`~medfed.data.statistics.SiteQuery`); the
site computes its additive counts and sums (:func:`~medfed.data.statistics.contribution`) from
its own records and either sends them (``Reply.update``, one float64 tensor per block) or,
when the round asks for secure aggregation, holds them as exact digits
(:mod:`medfed.data.statistics.exact`) for the protocol, so that only their sum over sites
is ever learnt. A site with fewer records than the query's minimum count declines: even
its sums would describe too few patients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from medfed.data.base import DataSpec, SiteData
from medfed.data.statistics import Contribution, SiteQuery, SiteTable, contribution, site_table
from medfed.data.statistics.exact import to_digits
from medfed.errors import DataError
from medfed.records import Instruction, Params, Update
from medfed.site.secure_aggregation import SecureAggregationSite

__all__ = ["DIGITS_TENSOR", "SiteDataSource", "StatsSource", "answer_stats", "site_contribution"]

DIGITS_TENSOR = "stats.digits"


class StatsSource(Protocol):
    """Where a site's statistics read its records from."""

    def table(self, split: str) -> SiteTable: ...


@dataclass(frozen=True)
class SiteDataSource:
    """A site's loaded data (bundled, a data set file, or a node's registered data set)."""

    data: SiteData
    spec: DataSpec

    def table(self, split: str) -> SiteTable:
        return site_table(self.data, self.spec, split=split)


def query_of(message: Mapping[str, Any] | None) -> tuple[SiteQuery, int]:
    """The exchange's query and minimum record count, from an instruction's message."""
    if not message or "query" not in message:
        raise DataError("a statistics instruction carries its query in the message")
    query = SiteQuery.from_json(dict(message["query"]))
    return query, int(message.get("min_records", 1))


def site_contribution(source: StatsSource, message: Mapping[str, Any] | None) -> Contribution:
    """Exactly what this site would send for ``message`` (``medfed node inspect`` shows it)."""
    query, min_records = query_of(message)
    table = source.table(query.split)
    if table.rows < min_records:
        raise DataError(
            f"this site's records for the query are fewer than the minimum count {min_records}; "
            "it declines to send statistics about so few patients (how many stays here)"
        )
    return contribution(table, query)


def answer_stats(
    instruction: Instruction,
    source: StatsSource | None,
    secure: SecureAggregationSite | None,
) -> tuple[Update | None, dict[str, Any]]:
    """The reply's update (None when held for secure aggregation) and message."""
    if source is None:
        raise DataError("this site has no tabular data to answer statistics from")
    result = site_contribution(source, instruction.message)
    layout = [[name, size] for name, size in result.layout]
    if instruction.settings.secure is not None:
        if secure is None:
            raise RuntimeError(
                "the coordinator asks for secure aggregation, which this site is not set up for"
            )
        digits = to_digits(result)
        secure.hold(instruction, Update(Params({DIGITS_TENSOR: digits}), num_examples=1))
        return None, {"secagg": "held", "length": int(digits.size), "layout": layout}
    blocks = Params({name: result[name] for name in result})
    return Update(blocks, num_examples=0), {"stats": "contribution", "layout": layout}
