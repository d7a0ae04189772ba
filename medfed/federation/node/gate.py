"""Why a node declines a job whatever its steward would say: the steward's minimum protection
(``--require``), and the data set and contract the job needs against what this node serves.

Each refusal has two texts: what the node says locally (details, for the steward) and the
reason class it tells the coordinator (no patient data, no budget figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medfed.errors import MedfedError
from medfed.federation.node.privacy import check_required, job_privacy
from medfed.federation.node.statistics import is_statistics, missing_protection

__all__ = ["Refusal", "refusal"]


@dataclass(frozen=True)
class Refusal:
    said: str  # what this node prints
    reason: str  # what the coordinator is told


def refusal(
    job: dict[str, Any],
    *,
    require: frozenset[str],
    dataset: str,
    contract_sha256: str | None,
    data_problem: str | None = None,
) -> Refusal | None:
    """Why this node cannot take part in ``job``, or None.

    ``data_problem``: the served data set fails its contract (the summary of
    :meth:`~medfed.data.contract.ContractReport.summary`: columns, rules and row counts, never
    a row); every job is then declined with it.
    """
    if data_problem is not None:
        reason = f"the site's data fail the data contract: {data_problem}"
        return Refusal(reason, reason[:300])
    if require and is_statistics(job):  # its protections are its query's and its table's
        try:
            said = missing_protection(require, job)
        except MedfedError as exc:
            said = f"the statistics job's query is malformed: {exc}"
        if said is not None:
            return Refusal(said, f"the site requires {' and '.join(sorted(require))}")
    elif require:
        try:
            check_required(require, job_privacy(job.get("privacy")))
        except MedfedError as exc:
            return Refusal(str(exc), f"the site requires {' and '.join(sorted(require))}")
    return _data(job.get("data_spec"), dataset=dataset, contract_sha256=contract_sha256)


def _data(data_spec: Any, *, dataset: str, contract_sha256: str | None) -> Refusal | None:
    """A job that names a data contract runs only where the data set is registered under that
    very contract (same sha256) and name; a job without one is not checked here."""
    if not isinstance(data_spec, dict) or data_spec.get("contract_sha256") is None:
        return None
    wanted = str(data_spec.get("contract_sha256"))
    title = data_spec.get("contract")
    title = title[:100] if isinstance(title, str) else "?"
    if wanted != contract_sha256:
        held = "no contract" if contract_sha256 is None else f"contract {contract_sha256[:12]}…"
        return Refusal(
            f"the job expects data under {title} ({wanted[:12]}…), but {dataset!r} is served "
            f"here under {held}",
            "the site's data set is not registered under this data contract",
        )
    named = data_spec.get("data")
    if named not in (None, dataset):
        return Refusal(
            f"the job names data set {str(named)[:64]!r}; this node serves {dataset!r}",
            "the site serves another data set",
        )
    return None
