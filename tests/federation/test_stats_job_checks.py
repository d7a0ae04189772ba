"""The checks around a statistics job, each on real objects: what the coordinator accepts as
a job and as a site's sums, what a node approves and answers, and the codec of queries and
released results."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from medfed.config import DataConfig
from medfed.data import load_dataset
from medfed.data.statistics import Statistic, StatsQuery
from medfed.data.statistics.codec import query_from_json, query_to_json, result_from_json
from medfed.errors import ConfigError, UsageError
from medfed.federation.coordinator.routes.secagg import sums_problem
from medfed.federation.coordinator.stats_job import query_document, stats_job_config
from medfed.federation.node.gate import refusal
from medfed.federation.node.statistics import check_exchange, first_message, statistics_context
from medfed.orchestration.statistics import simulate_statistics
from medfed.records import Instruction, Operation, Params

FEATURES = ("mean radius", "mean texture")
QUERY = StatsQuery(features=FEATURES, min_count=20)


def _config(**changes: object) -> dict:
    raw = {
        "kind": "statistics",
        "query": query_to_json(QUERY),
        "features": list(FEATURES),
        "privacy": {"secure_aggregation": False},
        "min_sites": 2,
    }
    return {**raw, **changes}


def _stats(message: dict) -> Instruction:
    return Instruction(Operation.STATS, 1, Params(), seed=0, message=message)


def _announced(query: StatsQuery = QUERY, **changes: object) -> dict:
    config = stats_job_config(_config(query=query_to_json(query)))
    return {
        "kind": "statistics",
        "statistics": {"query": config["query"], "features": config["features"]},
        "privacy": config["privacy"],
        **changes,
    }


def test_the_codec_keeps_a_query_and_a_released_result() -> None:
    query = StatsQuery(
        features=FEATURES, statistics=(Statistic.COUNT, Statistic.HISTOGRAM, Statistic.QUANTILES),
        quantiles=(0.5,), ranges={"mean radius": (0.0, 40.0)},
    )  # fmt: skip
    assert query_from_json(json.loads(json.dumps(query_to_json(query)))) == query
    result = simulate_statistics(DataConfig(name="breast-cancer"), query)
    stored = json.loads(json.dumps(result.to_json()))
    assert result_from_json(stored, query).to_json() == result.to_json()
    with pytest.raises(ConfigError, match="unknown setting"):
        query_from_json({**query_to_json(query), "raw_rows": True})
    with pytest.raises(ConfigError, match="min_count"):
        query_from_json({**query_to_json(query), "min_count": 0})


def test_the_coordinator_checks_a_statistics_job_whole() -> None:
    config = stats_job_config(_config())
    assert config["rounds"] == 1 and config["query"]["min_count"] == 20
    document = json.loads(query_document(config["query"], config["features"]))
    assert document == {"kind": "statistics", "query": config["query"], "features": list(FEATURES)}
    with pytest.raises(ConfigError) as caught:
        stats_job_config(_config(features=["age"], min_sites=0, model="x"))
    said = str(caught.value)
    assert "unknown setting(s) model" in said and "min_sites" in said
    assert "features must be the query's features" in said


def test_a_sites_sums_must_be_finite_float64_vectors() -> None:
    assert sums_problem(Params({"rows": np.array([3.0]), "sum": np.zeros(2)})) is None
    assert "1-D float64" in str(sums_problem(Params({"rows": np.array([3], np.int64)})))
    assert "1-D float64" in str(sums_problem(Params({"rows": np.zeros((2, 2))})))
    assert "NaN" in str(sums_problem(Params({"sum": np.array([np.nan])})))


def test_a_node_answers_only_what_its_steward_approved() -> None:
    check_exchange(_stats(first_message(QUERY, FEATURES)), QUERY, FEATURES)  # as approved
    wider = first_message(dataclasses.replace(QUERY, features=(*FEATURES, "mean area")),
                          (*FEATURES, "mean area"))  # fmt: skip
    with pytest.raises(UsageError, match="'mean area', not in the approved query"):
        check_exchange(_stats(wider), QUERY, FEATURES)
    smaller = {**first_message(QUERY, FEATURES), "min_records": 5}
    with pytest.raises(UsageError, match="minimum count 5 is below the approved 20"):
        check_exchange(_stats(smaller), QUERY, FEATURES)
    private = dataclasses.replace(
        QUERY, epsilon=1.0, ranges={"mean radius": (0.0, 40.0), "mean texture": (0.0, 50.0)}
    )
    with pytest.raises(UsageError, match="less DP noise"):
        check_exchange(_stats(first_message(QUERY, FEATURES)), private, FEATURES)
    check_exchange(_stats(first_message(private, FEATURES)), private, FEATURES)


def test_a_node_refuses_a_bundle_that_is_not_the_announced_query(tmp_path) -> None:
    dataset = load_dataset("breast-cancer")
    site = dataset.site_names[0]
    config = stats_job_config(_config())
    bundle = query_document({**config["query"], "min_count": 10}, config["features"])
    with pytest.raises(UsageError, match="differs from the query announced"):
        statistics_context(
            "job-1", _announced(), sha="0" * 64, bundle=bundle, site=site,
            data=dataset.site(site), spec=dataset.spec, dataset="breast-cancer",
            state_dir=tmp_path, identity_key=None,
        )  # fmt: skip
    same = query_document(config["query"], config["features"])
    ctx = statistics_context(
        "job-1", _announced(), sha="0" * 64, bundle=same, site=site, data=dataset.site(site),
        spec=dataset.spec, dataset="breast-cancer", state_dir=tmp_path, identity_key=None,
    )  # fmt: skip
    reply = ctx.runtime.handle(_stats(first_message(QUERY, FEATURES)))
    assert reply.ok and reply.update is not None
    from medfed.data.statistics import site_table

    rows = site_table(dataset.site(site), dataset.spec, split="all").rows
    assert reply.update.delta["rows"].tolist() == [float(rows)]
    train = Instruction(Operation.TRAIN, 1, Params(), seed=0)
    assert not ctx.runtime.handle(train).ok  # a statistics job never trains


def test_a_stewards_minimum_protection_applies_to_statistics_jobs() -> None:
    def gate(job: dict, require: str) -> str | None:
        r = refusal(job, require=frozenset({require}), dataset="bc", contract_sha256=None)
        return None if r is None else r.said

    assert "differential privacy" in str(gate(_announced(), "dp"))
    private = dataclasses.replace(
        QUERY, epsilon=1.0, ranges={"mean radius": (0.0, 40.0), "mean texture": (0.0, 50.0)}
    )
    assert gate(_announced(private), "dp") is None
    assert "secure aggregation" in str(gate(_announced(), "secagg"))
    assert gate(_announced(privacy={"secure_aggregation": True}), "secagg") is None
