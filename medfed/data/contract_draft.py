"""A first draft of a data contract, written from a data set file's own tables.

A consortium rarely starts from a blank page: someone holds example tables (the data
scientist's per-hospital CSV files, or one hospital's export). ``medfed data contract
DATA.toml`` reads them and writes a contract that they pass — every column with its type,
the categories seen, the label and id columns, and each number's observed range — for the
consortium to edit before it is versioned with the job:

- a range is the observed one, widened to whole numbers; replace it with the clinically
  plausible range (an age of 130 should fail, a site's oldest patient should not);
- units cannot be seen in data: each number gets ``unit = ""`` to fill in;
- a column that is a whole number everywhere is an ``integer``, other numbers ``number``,
  anything else a ``category`` (at most :data:`MAX_DRAFT_CATEGORIES` values: a text column
  with more is an error naming it — make it the id column or leave it out of ``features``).

The draft is written from the tables at hand and is not sent anywhere.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from medfed.data.base import TaskKind
from medfed.data.data_file import TableSource, read_source, read_table
from medfed.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_DRAFT_CATEGORIES", "draft_contract"]

MAX_DRAFT_CATEGORIES = 50


def _tables(source: TableSource) -> list[tuple[str, pd.DataFrame]]:
    if source.file is not None:
        frame = read_table(source.file)
        if source.site_column is not None and source.site_column in frame.columns:
            frame = frame.drop(columns=[source.site_column])
        return [(str(source.file), frame)]
    out = []
    for site in source.sites:
        out.append((str(site.train), read_table(site.train)))
        if site.test is not None:
            out.append((str(site.test), read_table(site.test)))
    return out


def _columns(source: TableSource, tables: list[tuple[str, pd.DataFrame]]) -> list[str]:
    first_where, first = tables[0]
    skip = {source.site_column} if source.file is not None else set()
    wanted = [c for c in first.columns if c not in skip]
    if source.features:
        keep = {*source.features, *source.outcome_columns, source.id_column}
        wanted = [c for c in wanted if c in keep]
    for where, frame in tables[1:]:
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise DataError(
                f"{where}: no column {missing[0]!r}, which {first_where} has; every site's "
                "table needs the same columns"
            )
    return [str(c) for c in wanted]


def _rule(name: str, values: pd.Series, *, where: str) -> dict[str, Any]:
    import pandas as pd

    present = values.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and not numbers.isna().any():
        whole = bool((numbers % 1 == 0).all())
        low, high = float(numbers.min()), float(numbers.max())
        return {
            "type": "integer" if whole else "number",
            "unit": "",
            "min": math.floor(low),
            "max": math.ceil(high),
        }
    categories = sorted({str(v) for v in present})
    if not categories:
        raise DataError(f"{where}: column {name!r} is empty in every table; leave it out")
    if len(categories) > MAX_DRAFT_CATEGORIES:
        raise DataError(
            f"{where}: column {name!r} has {len(categories)} different text values, too many "
            f"for a category (at most {MAX_DRAFT_CATEGORIES}); if it identifies patients make "
            "it the id_column, otherwise list the columns to use in features = [...]"
        )
    return {"type": "category", "categories": categories}


def draft_contract(data_file: str | Path, *, name: str | None = None) -> str:
    """The TOML text of a contract that the data set file's tables pass."""
    import pandas as pd

    source = read_source(data_file)
    if source.contract is not None:
        raise DataError(
            f"{source.path} already names a contract ({source.contract.title}); edit that file"
        )
    tables = _tables(source)
    columns = _columns(source, tables)
    where = str(source.path)
    rules: dict[str, dict[str, Any]] = {}
    for column in columns:
        values = pd.concat([frame[column] for _, frame in tables], ignore_index=True)
        if column == source.id_column:
            rules[column] = {"type": "text"}
            continue
        rule = _rule(column, values, where=where)
        if column in source.outcome_columns and source.kind is not TaskKind.SURVIVAL:
            # the label is a category even when its values are numbers (0/1), spelt as the
            # contract's check reads them (str of each value), numbers in numeric order
            seen = {str(v) for v in values.dropna()}
            rule = {"type": "category", "categories": sorted(seen, key=_label_order)}
        rules[column] = rule
    doc: dict[str, Any] = {
        # a data set file called data.toml is named after its folder
        "name": name
        or (source.path.parent.name if source.path.stem == "data" else source.path.stem),
        "version": "1",
        "task": str(source.kind),
    }
    if source.kind is TaskKind.SURVIVAL:
        doc.update(time=source.time, event=source.event)
    else:
        doc["label"] = source.label
        if source.positive is not None:
            doc["positive"] = str(source.positive)
    if source.id_column is not None:
        doc["id_column"] = source.id_column
    doc["missing"] = "impute"
    doc["columns"] = rules
    header = (
        f"# A draft data contract, written by `medfed data contract` from {source.path.name}'s\n"
        "# tables. Before the federation versions it with its jobs: set each number's unit and\n"
        "# its clinically plausible min/max (these are the ranges seen in these tables), and\n"
        "# check the categories. `medfed node dataset check` shows what a site's data break.\n"
    )
    return header + tomli_w.dumps(doc)


def _label_order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
