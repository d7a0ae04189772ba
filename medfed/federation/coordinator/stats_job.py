"""A statistics job: federated statistics over the sites that approved it, nothing trained.

Its configuration (``kind = "statistics"``) holds the researcher's query, the features it
resolves to (the researcher's side knows the data set's columns from the contract or the
bundled data set), whether secure aggregation is asked for, and the data set it needs. The
job's "task bundle" is that query's JSON text, so each data steward's approval covers the
exact query (its sha256 and the announced terms). The coordinator runs
:func:`~medfed.orchestration.statistics.run_statistics` over the job's
:class:`~.remote_backend.RemoteBackend` and stores only the released result (suppressed,
thresholded), as the summary of the job's one "round".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from medfed.data.statistics.codec import query_from_json, query_to_json
from medfed.errors import ConfigError
from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.remote_backend import RemoteBackend
from medfed.federation.coordinator.store import Store
from medfed.federation.identity.certificates import CertificateBook, identity_verifier
from medfed.orchestration.secure_round import SecureAggregation
from medfed.orchestration.statistics import run_statistics

__all__ = [
    "MAX_STATS_VALUES",
    "STATS_KIND",
    "is_stats_job",
    "query_document",
    "run_stats_job",
    "stats_announcement",
    "stats_job_config",
]

STATS_KIND = "statistics"
MAX_STATS_VALUES = 1 << 22  # values one site may send in one statistics exchange
_DATA_KEYS = ("data", "contract", "contract_sha256")
_KEYS = (
    "kind",
    "query",
    "features",
    "privacy",
    "min_sites",
    "round_timeout",
    "data_spec",
    "rounds",
)


def is_stats_job(config: Mapping[str, Any]) -> bool:
    return isinstance(config, Mapping) and config.get("kind") == STATS_KIND


def query_document(query: Mapping[str, Any], features: list[str]) -> bytes:
    """The text a statistics job's bundle holds: what the data stewards approve (canonical)."""
    body = {"kind": STATS_KIND, "query": dict(query), "features": list(features)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def stats_job_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A statistics job's configuration, checked whole (a ConfigError says every problem)."""
    problems: list[str] = []
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        problems.append(f"unknown setting(s) {', '.join(unknown)}")
    query = None
    try:
        query = query_from_json(raw.get("query", {}))
    except ConfigError as exc:
        problems.append(str(exc))
    features = raw.get("features")
    if (
        not isinstance(features, list)
        or not 0 < len(features) <= 1000
        or any(not isinstance(f, str) or not 0 < len(f) <= 200 for f in features)
    ):
        problems.append("features must be a list of 1 to 1000 feature names")
    elif query is not None and query.features and list(query.features) != features:
        problems.append("features must be the query's features")
    privacy = raw.get("privacy", {})
    if not isinstance(privacy, dict) or set(privacy) - {"secure_aggregation"}:
        problems.append("privacy may only say secure_aggregation = true or false")
    elif not isinstance(privacy.get("secure_aggregation", False), bool):
        problems.append("privacy.secure_aggregation must be true or false")
    min_sites = raw.get("min_sites", 2)
    if isinstance(min_sites, bool) or not isinstance(min_sites, int) or not 1 <= min_sites <= 10**4:
        problems.append("min_sites must be an integer between 1 and 10000")
    timeout = raw.get("round_timeout", 600.0)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 1 <= timeout <= 7 * 86400
    ):
        problems.append("round_timeout must be a number of seconds between 1 and 604800")
    spec = raw.get("data_spec", {})
    if not isinstance(spec, dict) or set(spec) - set(_DATA_KEYS):
        problems.append(f"data_spec may only hold {', '.join(_DATA_KEYS)}")
    elif any(not isinstance(v, str) or not 0 < len(v) <= 200 for v in spec.values()):
        problems.append("data_spec's values must be text of 1 to 200 characters")
    if problems or query is None:
        raise ConfigError(
            "the statistics job is refused: " + "; ".join(problems) + " (fix it and submit again)"
        )
    return {
        "kind": STATS_KIND,
        "query": query_to_json(query),
        "features": list(features),  # type: ignore[arg-type]
        "privacy": {"secure_aggregation": bool(privacy.get("secure_aggregation", False))},
        "min_sites": min_sites,
        "round_timeout": float(timeout),
        "data_spec": dict(spec),
        "rounds": 1,
    }


def stats_announcement(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a node is told of a statistics job beyond a training job's fields (empty for
    a training job, so that its approval terms stay as they were)."""
    if not is_stats_job(config):
        return {}
    return {
        "kind": STATS_KIND,
        "statistics": {"query": config.get("query"), "features": config.get("features")},
    }


def run_stats_job(
    store: Store, blobs: BlobStore, job_id: str, backend: RemoteBackend, config: Mapping[str, Any]
) -> None:
    """Answer the job's query over the sites that approved it; store the released result."""
    query = query_from_json(config["query"])
    # the exchanges ask every site that approved by then (RemoteBackend.site_names)
    backend.wait_for_sites(int(config.get("min_sites", 2)))
    secure = None
    if (config.get("privacy") or {}).get("secure_aggregation"):
        secure = SecureAggregation(
            job=job_id, verify_identity=identity_verifier(CertificateBook(store.engine))
        )
    result = run_statistics(
        backend,
        query,
        features=list(config["features"]),
        secure=secure,
        timeout=float(config.get("round_timeout", 600.0)),
    )
    job = store.job(job_id)
    assert job is not None
    store.record_round(
        job_id, 1, job.params_sha256, {"statistics": result.to_json(), "query": config["query"]}
    )
