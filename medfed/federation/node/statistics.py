"""A node's part in a statistics job: the approved query, answered from the served data set.

A statistics job's bundle is its query's JSON text (see
:mod:`medfed.federation.coordinator.stats_job`); the node reads the query from the bundle
whose sha256 its data steward approved (never from anything else the coordinator says) and
answers ``STATS`` instructions from the data set it serves — its sums in the clear, or held
as exact digits for secure aggregation. It never trains. :func:`preview` is what
``medfed node inspect`` shows: exactly what this site would send for the first exchange.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medfed.data.base import DataSpec, SiteData
from medfed.data.statistics import Contribution, StatsQuery
from medfed.data.statistics.codec import query_from_json, query_to_json
from medfed.data.statistics.plan import moments_query, noise_multiplier
from medfed.errors import ConfigError, DataError, UsageError
from medfed.federation.node.job_context import JobContext
from medfed.federation.node.privacy import JobProtection, job_privacy, protect_job
from medfed.records import Instruction, Metrics, Operation, Params
from medfed.site.app import FitResult
from medfed.site.budget import SiteBudget
from medfed.site.runtime import SiteRuntime
from medfed.site.statistics import SiteDataSource, query_of, site_contribution

__all__ = [
    "STATS_KIND",
    "check_exchange",
    "enough_records",
    "first_message",
    "is_statistics",
    "missing_protection",
    "pending_statistics",
    "preview",
    "statistics_context",
    "statistics_of",
    "statistics_protection",
]

STATS_KIND = "statistics"


def is_statistics(announced: Mapping[str, Any]) -> bool:
    return announced.get("kind") == STATS_KIND


def pending_statistics(terms: Mapping[str, Any] | None) -> tuple[StatsQuery, tuple[str, ...]]:
    """The query of a statistics job waiting for approval, from its request's terms."""
    stats = (terms or {}).get("statistics")
    if (terms or {}).get("kind") != STATS_KIND or not isinstance(stats, dict):
        raise UsageError("that job is not a statistics job; medfed node pending shows its terms")
    document = json.dumps({"kind": STATS_KIND, **stats}).encode()
    return statistics_of(document)


def statistics_of(bundle: bytes) -> tuple[StatsQuery, tuple[str, ...]]:
    """The query and features a statistics job's bundle holds (ConfigError if malformed)."""
    try:
        raw = json.loads(bundle)
        if not isinstance(raw, dict) or raw.get("kind") != STATS_KIND:
            raise ValueError("not a statistics query")
        features = tuple(str(f) for f in raw["features"])
        return query_from_json(raw["query"]), features
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the statistics job's query is malformed: {exc}") from None


class StatisticsOnly:
    """The site app of a statistics job: it answers STATS and refuses to train."""

    def fit(self, params: Params, instruction: Instruction) -> FitResult:
        raise UsageError("this job is a statistics job; this site does not train for it")

    def evaluate(self, params: Params, instruction: Instruction) -> Metrics:
        raise UsageError("this job is a statistics job; this site does not evaluate for it")


def statistics_context(
    job_id: str,
    announced: Mapping[str, Any],
    *,
    sha: str,
    bundle: bytes,
    site: str,
    data: SiteData,
    spec: DataSpec,
    dataset: str,
    state_dir: Path,
    identity_key: Any,
) -> JobContext:
    """The context answering ``job_id``'s STATS instructions with the approved query only."""
    query, features = statistics_of(bundle)
    if announced.get("statistics") != {"query": query_to_json(query), "features": list(features)}:
        raise UsageError(
            "the statistics job's query differs from the query announced for approval; "
            "this site refuses it"
        )
    protection = statistics_protection(
        job_id, announced, site=site, dataset=dataset, state_dir=state_dir,
        identity_key=identity_key, query=query,
    )  # fmt: skip
    source = SiteDataSource(data, spec)
    runtime = SiteRuntime(site, StatisticsOnly(), secure=protection.secure, stats=source)

    def check(instruction: Instruction) -> None:
        check_exchange(instruction, query, features)
        enough_records(instruction, source)

    return JobContext(sha, runtime, protection, check=check)


def enough_records(instruction: Instruction, source: SiteDataSource) -> None:
    """Decline an exchange over fewer records than its minimum count *without* saying how
    many: the refusal leaves the site, and a count under the threshold must not."""
    if instruction.operation is not Operation.STATS:
        return
    asked, min_records = query_of(instruction.message)
    if source.table(asked.split).rows < min_records:
        raise DataError(
            f"this site holds fewer records than the minimum count {min_records}; it sends no "
            "statistics about so few patients"
        )


def _secure(announced: Mapping[str, Any]) -> bool:
    privacy = announced.get("privacy") or {}
    return isinstance(privacy, dict) and privacy.get("secure_aggregation") is True


def announced_query(announced: Mapping[str, Any]) -> StatsQuery:
    """The query a statistics job was announced with (what its steward approves)."""
    return pending_statistics({"kind": announced.get("kind"), **announced})[0]


def statistics_protection(
    job_id: str,
    announced: Mapping[str, Any],
    *,
    site: str,
    dataset: str,
    state_dir: Path,
    identity_key: Any,
    query: StatsQuery | None = None,
) -> JobProtection:
    """A statistics job's protection: secure aggregation when it asks, and with DP (the
    query's ε) its exchanges reserved on the data set's lifetime budget — each exchange a
    Gaussian release of the query's noise multiplier (BudgetExceeded: the node declines)."""
    query = query or announced_query(announced)
    privacy = {"secure_aggregation": _secure(announced)}
    if identity_key is None and privacy["secure_aggregation"]:  # a reservation only
        protection = JobProtection(job_id, job_privacy(privacy), dataset)
    else:
        protection = protect_job(
            job_id,
            {"privacy": privacy, "rounds": 1},
            site=site,
            dataset=dataset,
            state_dir=state_dir,
            identity_key=identity_key,
        )
    sigma = noise_multiplier(query)
    if sigma is not None:
        if not dataset:
            raise UsageError("this node does not know the name of its data set, so it refuses DP")
        protection.dataset = dataset
        protection.budget = SiteBudget.in_state(state_dir)
        protection.budget.reserve(
            dataset, job=job_id, noise_multiplier=sigma, sample_rate=1.0, rounds=query.passes
        )
    return protection


def missing_protection(require: frozenset[str], announced: Mapping[str, Any]) -> str | None:
    """What of the steward's minimum (``--require``) a statistics job lacks, or None."""
    missing = []
    if "dp" in require and announced_query(announced).epsilon is None:
        missing.append("differential privacy (--epsilon with --range)")
    if "secagg" in require and not _secure(announced):
        missing.append("secure aggregation (--secure)")
    if not missing:
        return None
    return (
        f"this site requires {' and '.join(missing)} of every statistics job, and this one "
        "has none; the node refuses it"
    )


def check_exchange(instruction: Instruction, query: StatsQuery, features: tuple[str, ...]) -> None:
    """Refuse an exchange that asks more than the approved query: other features or records,
    a smaller minimum count, or less DP noise than the query's ε needs."""
    if instruction.operation is not Operation.STATS:
        return
    try:
        asked, min_records = query_of(instruction.message)
    except (ConfigError, DataError, TypeError, ValueError) as exc:
        raise UsageError(f"the coordinator's statistics exchange is malformed: {exc}") from None
    extra = [f for f in asked.features if f not in features]
    problems = []
    if extra:
        problems.append(f"it asks about {', '.join(map(repr, extra))}, not in the approved query")
    if asked.split != query.split:
        problems.append(f"it asks about the {asked.split!r} records, not {query.split!r}")
    if min_records < query.min_count:
        problems.append(f"its minimum count {min_records} is below the approved {query.min_count}")
    sigma = noise_multiplier(query)
    if sigma is not None and (asked.noise_multiplier is None or asked.noise_multiplier < sigma):
        problems.append("it asks for less DP noise than the approved query's epsilon needs")
    if problems:
        raise UsageError(
            "this site refuses the statistics exchange: " + "; ".join(problems) + " (the data "
            "steward approved another query)"
        )


def first_message(query: StatsQuery, features: tuple[str, ...]) -> dict[str, Any]:
    """The first exchange's STATS message for ``query`` (as the coordinator sends it)."""
    site_query = moments_query(query, features, sigma=noise_multiplier(query))
    return {"query": site_query.to_json(), "min_records": query.min_count}


def preview(
    data: SiteData, spec: DataSpec, query: StatsQuery, features: tuple[str, ...]
) -> tuple[dict[str, Any], Contribution]:
    """What this site would send for the first exchange of ``query``: the message it answers
    and its contribution (raises DataError when it would decline)."""
    message = first_message(query, features)
    return message, site_contribution(SiteDataSource(data, spec), message)
