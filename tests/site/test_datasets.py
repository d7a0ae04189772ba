"""A node's registered data sets: added once by the steward, served by name, under a contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.errors import DataError
from medfed.site.datasets import DatasetRegistry
from tests.data.test_contract import CONTRACT, _table


def _files(tmp_path: Path) -> tuple[Path, Path]:
    contract = tmp_path / "readmission.contract.toml"
    contract.write_text(CONTRACT)
    table = tmp_path / "export.csv"
    _table(0, n=80).to_csv(table, index=False)
    return table, contract


def test_a_table_is_registered_under_its_contract_and_served_by_name(tmp_path: Path) -> None:
    table, contract = _files(tmp_path)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    served = registry.add("readmission", table, contract=contract, by="dana")
    assert served.data.num_train + served.data.num_test == 80 and served.data.num_test == 16
    assert served.spec.feature_names == ("age", "visits", "sex=F", "sex=M")
    [entry] = registry.list()
    assert entry.added_by == "dana" and entry.contract_title == "contract readmission v2"
    again = registry.load("readmission")
    np.testing.assert_array_equal(again.data.x_test, served.data.x_test)  # a fixed split
    # the contract is pinned as registered: editing the original changes nothing
    contract.write_text(CONTRACT.replace("max = 120", "max = 60"))
    assert registry.check("readmission").passed
    assert not registry.check("readmission", contract).passed  # the edited one, on request
    with pytest.raises(DataError, match="registered already"):
        registry.add("readmission", table, contract=contract, by="dana")
    registry.remove("readmission")
    with pytest.raises(DataError, match="no data set 'readmission' is registered"):
        registry.load("readmission")


def test_a_failing_table_is_refused_with_every_rule_it_breaks(tmp_path: Path) -> None:
    table, contract = _files(tmp_path)
    bad = pd.read_csv(table)
    bad.loc[[0, 1], "age"] = 200
    bad.loc[2, "sex"] = "unknown"
    bad.to_csv(table, index=False)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    with pytest.raises(DataError, match="must be at most 120, 2 row"):
        registry.add("readmission", table, contract=contract, by="dana")
    assert registry.list() == []  # nothing registered


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-contract", "served under a data contract"),
        ("outside", "outside its folder"),
        ("bad-name", "lower-case letters"),
        ("missing", "no file at"),
    ],
)
def test_what_a_node_will_not_register(tmp_path: Path, setup: str, message: str) -> None:
    table, contract = _files(tmp_path)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    kwargs: dict[str, object] = {"contract": contract}
    name, path = "readmission", table
    if setup == "no-contract":
        kwargs = {}
    elif setup == "outside":
        inner = tmp_path / "hospital"
        inner.mkdir()
        path = inner / "data.toml"
        path.write_text(
            'contract = "../readmission.contract.toml"\n[sites.a]\ntrain = "../export.csv"\n'
        )
        kwargs = {}
    elif setup == "bad-name":
        name = "Readmission/../x"
    else:
        path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=message):
        registry.add(name, path, by="dana", **kwargs)  # type: ignore[arg-type]
