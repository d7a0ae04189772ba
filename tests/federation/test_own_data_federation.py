"""A federation on the hospitals' own tables: each node serves a data set its steward
registered under the federation's data contract; a job names the data set and the contract.

The tables are the bundled breast-cancer hospitals (real patients) written as one CSV per
hospital; the researcher's machine holds no patient data: the job's input comes from the
contract. A node whose data set is registered under another version of the contract, or
whose data no longer pass it, declines the job with the reason, and the others finish it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.data import load_dataset
from medfed.data.contract import read_contract
from medfed.federation.coordinator.jobs import JobConfig
from medfed.site.datasets import DatasetRegistry
from tests.federation.conftest import SITES
from tests.federation.inmemory import InMemoryFederation
from tests.federation.server import submit_config

pytestmark = pytest.mark.integration


def _contract(features: tuple[str, ...], version: str) -> str:
    lines = ['name = "breast-cancer"', f'version = "{version}"', 'task = "binary"']
    lines += ['label = "diagnosis"', 'positive = "malignant"', 'id_column = "patient_id"']
    lines += ["[columns.patient_id]", 'type = "text"']
    lines += ["[columns.diagnosis]", 'type = "category"', 'categories = ["benign", "malignant"]']
    for f in features:
        lines += [f'[columns."{f}"]', 'type = "number"', "min = -50", "max = 50"]
    return "\n".join(lines) + "\n"


def _register_and_start(fed: InMemoryFederation, tmp_path: Path, *, third: str) -> JobConfig:
    """Each hospital's table registered as bc-own under contract v1 and its node started; the
    third hospital's ``third``: "v2" (registered under another version) or "broken" (its
    table re-exported after registration with values v1 forbids). Returns the job on bc-own
    under v1."""
    bundled = load_dataset("breast-cancer")
    features = bundled.spec.feature_names
    (tmp_path / "v1.toml").write_text(_contract(features, "1"))
    (tmp_path / "v2.toml").write_text(_contract(features, "2").replace("max = 50", "max = 60"))
    for i, site in enumerate(SITES):
        s = bundled.site(site)
        x = np.concatenate([s.x_train, s.x_test])
        y = np.concatenate([s.y_train, s.y_test])
        table = pd.DataFrame(x, columns=list(features))
        table.insert(0, "patient_id", [f"{site}-{k}" for k in range(len(x))])
        table["diagnosis"] = np.where(y == 1, "malignant", "benign")
        table.to_csv(tmp_path / f"{site}.csv", index=False)
        state = fed.live.kits / "sites" / site / "state"
        contract = tmp_path / ("v2.toml" if i == 2 and third == "v2" else "v1.toml")
        DatasetRegistry.in_state(state).add(
            "bc-own", tmp_path / f"{site}.csv", contract=contract, by="steward"
        )
        if i == 2 and third == "broken":
            table.loc[[3, 4], features[0]] = 99.0
            table.to_csv(tmp_path / f"{site}.csv", index=False)
        fed.start_node(site, dataset="bc-own")
    contract = read_contract(tmp_path / "v1.toml")
    spec = contract.spec()
    assert spec.input_shape == bundled.spec.input_shape  # the example task fits it
    return JobConfig.from_json(
        {
            "rounds": 2,
            "strategy": {"min_sites": 2},
            "round_timeout": 60.0,
            "data_spec": {
                "kind": "binary",
                "input_shape": list(spec.input_shape),
                "n_classes": 2,
                "data": "bc-own",
                "contract": contract.title,
                "contract_sha256": contract.sha256,
            },
        }
    )


def test_nodes_serve_registered_tables_and_a_job_runs_on_the_contract(
    inmemory_federation: InMemoryFederation, tmp_path: Path
) -> None:
    fed = inmemory_federation
    config = _register_and_start(fed, tmp_path, third="v2")
    job_id = submit_config(fed.live, config, name="own-data")["id"]
    view = fed.wait_for_job(job_id, timeout=180)
    assert view["status"] == "complete", (view, fed.logs())
    assert all(sorted(r["trained"]) == sorted(SITES[:2]) for r in view["rounds_detail"])
    said = fed.nodes[SITES[2]].text
    assert "declined: the job expects data under contract breast-cancer v1" in said, said
    # the coordinator hears the reason class, nothing about the site's data
    assert view["sites"][SITES[2]] == "rejected"
    assert view["declined"] == {
        SITES[2]: "the site's data set is not registered under this data contract"
    }
    # it learned on the registered tables: better than always saying the commoner class
    held = [
        DatasetRegistry.in_state(fed.nodes[site].state).load("bc-own").data.y_test
        for site in SITES[:2]
    ]
    labels = np.concatenate(held)
    majority = max(labels.mean(), 1 - labels.mean())
    assert view["rounds_detail"][-1]["evaluate"]["accuracy"] > majority, view["rounds_detail"]


def test_a_site_whose_data_fail_the_contract_is_left_out_with_the_rules_it_breaks(
    inmemory_federation: InMemoryFederation, tmp_path: Path
) -> None:
    fed = inmemory_federation
    config = _register_and_start(fed, tmp_path, third="broken")
    job_id = submit_config(fed.live, config, name="own-data")["id"]
    view = fed.wait_for_job(job_id, timeout=180)
    assert view["status"] == "complete", (view, fed.logs())
    assert all(sorted(r["trained"]) == sorted(SITES[:2]) for r in view["rounds_detail"])
    reason = view["declined"][SITES[2]]
    rule = "column 'mean radius': must be at most 50, 2 row(s)"
    assert reason.startswith("the site's data fail the data contract") and rule in reason
    assert "data rows" not in reason  # which patients stays at the site
