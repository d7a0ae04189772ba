"""A drafted contract is a valid contract that the tables it was drafted from pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfed.cli.main import main
from medfed.data import load_dataset
from medfed.data.contract import read_contract
from medfed.data.contract_draft import MAX_DRAFT_CATEGORIES, draft_contract
from medfed.data.data_file import read_table
from medfed.data.export import export_dataset
from medfed.errors import DataError


def _passes_every_table(folder: Path, contract_path: Path) -> None:
    contract = read_contract(contract_path)
    tables = sorted(folder.glob("*.csv"))
    assert tables
    for table in tables:
        report = contract.check(read_table(table))
        assert report.passed, f"{table.name}: {report}"


@pytest.mark.parametrize("name", ["breast-cancer", "lung"])
def test_a_draft_from_bundled_tables_is_passed_by_them(tmp_path: Path, name: str) -> None:
    data_file = export_dataset(load_dataset(name), tmp_path)
    path = tmp_path / "draft.contract.toml"
    path.write_text(draft_contract(data_file, name="trial"))
    _passes_every_table(tmp_path, path)
    contract = read_contract(path)
    assert contract.name == "trial" and contract.id_column == "patient_id"
    dataset = load_dataset(name)
    # the contract alone gives the model's input: as many features as the data set has
    assert contract.spec().input_shape == dataset.spec.input_shape
    assert contract.spec().kind is dataset.spec.kind


def _write_site_tables(folder: Path, rows_a: str, rows_b: str, header: str) -> Path:
    (folder / "a.csv").write_text(header + rows_a)
    (folder / "b.csv").write_text(header + rows_b)
    data = folder / "data.toml"
    data.write_text(
        'task = "binary"\nlabel = "readmitted"\nid_column = "pid"\n'
        '[sites.a]\ntrain = "a.csv"\n[sites.b]\ntrain = "b.csv"\n'
    )
    return data


def test_types_categories_ranges_and_missing_values_are_drafted(tmp_path: Path) -> None:
    header = "pid,age,sex,lactate,readmitted\n"
    data = _write_site_tables(
        tmp_path,
        "p1,71,F,1.5,yes\np2,64,M,,no\n",
        "q1,80,M,2.25,no\nq2,55,F,0.5,yes\n",
        header,
    )
    path = tmp_path / "c.toml"
    path.write_text(draft_contract(data))
    contract = read_contract(path)
    assert contract.name == tmp_path.name  # data.toml: named after its folder
    age, sex, lactate = (contract.rule(n) for n in ("age", "sex", "lactate"))
    assert (age.type, age.min, age.max) == ("integer", 55, 80)
    assert (sex.type, sex.categories) == ("category", ("F", "M"))
    assert (lactate.type, lactate.min, lactate.max) == ("number", 0, 3)
    assert contract.classes() == ("no", "yes")
    _passes_every_table(tmp_path, path)
    # the draft is a check, not a copy: an out-of-range age at a new site fails it
    (tmp_path / "new.csv").write_text(header + "r1,130,F,1.0,no\n")
    report = contract.check(read_table(tmp_path / "new.csv"))
    assert not report.passed and "age" in str(report)


def test_a_numeric_label_becomes_a_category_in_numeric_order(tmp_path: Path) -> None:
    data = _write_site_tables(
        tmp_path, "p1,1,0\np2,2,1\n", "q1,3,10\nq2,4,2\n", "pid,x,readmitted\n"
    )
    data.write_text(data.read_text().replace('"binary"', '"multiclass"'))
    path = tmp_path / "c.toml"
    path.write_text(draft_contract(data))
    assert read_contract(path).classes() == ("0", "1", "2", "10")
    _passes_every_table(tmp_path, path)


def test_a_free_text_column_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    rows = "".join(f"p{i},{i},note {i},yes\n" for i in range(MAX_DRAFT_CATEGORIES + 1))
    data = _write_site_tables(tmp_path, rows, "q1,1,note,no\n", "pid,x,comment,readmitted\n")
    with pytest.raises(DataError, match=r"'comment'.*id_column.*features"):
        draft_contract(data)


def test_a_column_missing_at_one_site_is_named(tmp_path: Path) -> None:
    data = _write_site_tables(tmp_path, "p1,1,2,yes\n", "", "pid,x,y,readmitted\n")
    (tmp_path / "b.csv").write_text("pid,x,readmitted\nq1,1,no\n")
    with pytest.raises(DataError, match=r"b\.csv: no column 'y'"):
        draft_contract(data)


def test_the_cli_writes_a_contract_and_never_overwrites_silently(tmp_path: Path, capsys) -> None:
    data_file = export_dataset(load_dataset("breast-cancer"), tmp_path / "my-data")
    out = tmp_path / "bc.contract.toml"
    assert main(["data", "contract", str(data_file), "--out", str(out)]) == 0
    assert read_contract(out).name == "my-data"
    assert main(["data", "contract", str(data_file), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["data", "contract", str(tmp_path / "none.toml")]) == 2
