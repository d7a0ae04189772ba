"""The data contract: what every site's table must look like, declared once for a federation.

::

    # readmission.contract.toml — versioned with the job
    name = "readmission"
    version = "1"
    task = "binary"            # binary | multiclass | survival | regression
    label = "readmitted"       # survival: time = "…", event = "…"; regression: a number column
                               # (its min and max give the model's target centre and scale)
    positive = "yes"           # binary: the label value that is class 1
    id_column = "patient_id"   # each patient once (optional)
    missing = "impute"         # a missing feature: "impute" (the site's training mean or no
                               # category), "drop" the row, or "refuse" the table

    [columns.age]
    type = "number"            # number | integer | category | text (the id column only)
    unit = "years"             # documentation for the sites; medfed does not convert units
    min = 0
    max = 120
    [columns.sex]
    type = "category"
    categories = ["F", "M"]
    [columns.readmitted]
    type = "category"
    categories = ["no", "yes"]

Every column named under ``[columns]`` is a feature except the outcome and id columns; the
features' order, the categories' order and so the model's input are fixed by the contract,
not by any site's data — which is why a researcher needs no patient data to submit a job
(:meth:`DataContract.spec`). A site's table is checked with pandera (:meth:`DataContract.check`):
the report names each broken rule with its column and how many rows break it; only that
summary — never a row — is what a node may tell the coordinator.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, TaskKind
from medfed.data.outcomes import range_scaling
from medfed.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ColumnRule",
    "ContractReport",
    "DataContract",
    "Problem",
    "is_image_contract",
    "read_contract",
    "read_contract_file",
]

_TOP = {"name", "version", "task", "label", "time", "event", "positive", "id_column", "missing"}
_COLUMN_KEYS = {"type", "unit", "min", "max", "categories", "required"}
_TYPES = ("number", "integer", "category", "text")
_MAX_CATEGORIES = 1000


@dataclass(frozen=True)
class ColumnRule:
    """One column: its type, unit, allowed range or categories, and whether it may be empty."""

    name: str
    type: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    required: bool = False  # True: never missing, whatever the missing-value policy


@dataclass(frozen=True)
class Problem:
    """A broken rule: which column, which rule, how many rows (and the first few row numbers,
    which stay at the site)."""

    column: str
    rule: str
    rows: int
    first_rows: tuple[int, ...] = ()
    unit: str = "row"  # "image": a rule of an image contract, counted in images
    examples: tuple[str, ...] = ()  # the first few images' file names (they stay at the site)

    @property
    def _what(self) -> str:
        return f"column {self.column!r}" if self.unit == "row" else self.column

    def __str__(self) -> str:
        where = f" (data rows {', '.join(map(str, self.first_rows))}…)" if self.first_rows else ""
        if self.examples:
            where = f" ({', '.join(self.examples)}…)"
        return f"{self._what}: {self.rule}, {self.rows} {self.unit}(s){where}"

    def summary(self) -> str:
        """What may leave the site: the column, the rule and the count, no row numbers."""
        return f"{self._what}: {self.rule}, {self.rows} {self.unit}(s)"


@dataclass(frozen=True)
class ContractReport:
    """The outcome of checking one table against a contract."""

    contract: str
    problems: tuple[Problem, ...] = ()
    rows: int = 0
    unit: str = "row"  # an image contract counts images

    @property
    def passed(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.passed:
            return f"passes {self.contract} ({self.rows} {self.unit}s)"
        lines = [f"fails {self.contract}:"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def summary(self) -> str:
        """One line without row numbers: what a node reports to the coordinator."""
        if self.passed:
            return f"passes {self.contract}"
        return f"fails {self.contract}: " + "; ".join(p.summary() for p in self.problems[:5])


@dataclass(frozen=True)
class DataContract:
    name: str
    version: str
    kind: TaskKind
    columns: tuple[ColumnRule, ...]
    label: str | None = None
    time: str | None = None
    event: str | None = None
    positive: str | None = None
    id_column: str | None = None
    missing: str = "impute"
    sha256: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def title(self) -> str:
        return f"contract {self.name} v{self.version}"

    @property
    def outcome(self) -> tuple[str, ...]:
        if self.kind is TaskKind.SURVIVAL:
            return (str(self.time), str(self.event))
        return (str(self.label),)

    @property
    def features(self) -> tuple[ColumnRule, ...]:
        skip = {*self.outcome, self.id_column}
        return tuple(c for c in self.columns if c.name not in skip)

    def rule(self, name: str) -> ColumnRule:
        return next(c for c in self.columns if c.name == name)

    def feature_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for c in self.features:
            names.extend(
                [f"{c.name}={v}" for v in c.categories] if c.type == "category" else [c.name]
            )
        return tuple(names)

    def classes(self) -> tuple[str, ...]:
        """The label's categories in class order (binary: the positive one is class 1)."""
        if self.kind in (TaskKind.SURVIVAL, TaskKind.REGRESSION):
            return ()
        cats = self.rule(str(self.label)).categories
        if self.kind is TaskKind.BINARY and self.positive is not None:
            return (*[c for c in cats if c != self.positive], self.positive)
        return cats

    def spec(self) -> DataSpec:
        """The federation's data spec, from the contract alone (no patient data needed)."""
        n_classes = 2 if self.kind is not TaskKind.MULTICLASS else len(self.classes())
        names = self.feature_names()
        center, scale = 0.0, 1.0
        if self.kind is TaskKind.REGRESSION:
            rule = self.rule(str(self.label))
            center, scale = range_scaling(rule.min, rule.max)
        return DataSpec(
            self.kind,
            (len(names),),
            n_classes=n_classes,
            feature_names=names,
            target_center=center,
            target_scale=scale,
        )

    # --- checking a table --------------------------------------------------------------

    def check(self, frame: pd.DataFrame) -> ContractReport:
        """Every rule of the contract on ``frame`` (pandera, all failures collected)."""
        import pandera.pandas as pa

        missing_cols = [c.name for c in self.columns if c.name not in frame.columns]
        problems = [Problem(c, "the column is missing", len(frame)) for c in missing_cols]
        present = [c for c in self.columns if c.name in frame.columns]
        schema = pa.DataFrameSchema(
            {c.name: self._column(c, pa) for c in present},
            strict=False,
            coerce=False,
        )
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            problems += _problems(exc.failure_cases)
        return ContractReport(self.title, tuple(problems), rows=len(frame))

    def _column(self, c: ColumnRule, pa: Any) -> Any:
        outcome = c.name in self.outcome or c.name == self.id_column
        nullable = not (c.required or outcome or self.missing == "refuse")
        checks = []
        if c.type == "text":  # an id: never a feature
            return pa.Column(object, nullable=nullable, unique=c.name == self.id_column)
        if c.type == "category":
            checks.append(
                pa.Check(
                    lambda s, allowed=c.categories: s.dropna().astype(str).isin(allowed),
                    element_wise=False,
                    name=f"one of {list(c.categories)[:8]}",
                    ignore_na=True,
                )
            )
            return pa.Column(object, checks=checks, nullable=nullable, unique=False)
        if c.type == "integer":
            checks.append(
                pa.Check(lambda s: s.dropna() % 1 == 0, name="a whole number", ignore_na=True)
            )
        if c.min is not None:
            checks.append(pa.Check(lambda s, m=c.min: s >= m, name=f"at least {c.min:g}"))
        if c.max is not None:
            checks.append(pa.Check(lambda s, m=c.max: s <= m, name=f"at most {c.max:g}"))
        unique = c.name == self.id_column
        return pa.Column(float, checks=checks, nullable=nullable, coerce=True, unique=unique)

    # --- encoding a table that passed -------------------------------------------------

    def encode(self, frame: pd.DataFrame) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any]]:
        """Features (missing numbers as NaN) and labels of a table that passed :meth:`check`."""
        import pandas as pd

        blocks = []
        for c in self.features:
            values = frame[c.name]
            if c.type == "category":
                text = values.map(lambda v: None if pd.isna(v) else str(v))
                blocks.append(np.stack([(text == v).to_numpy(np.float64) for v in c.categories], 1))
            else:
                blocks.append(pd.to_numeric(values, errors="coerce").to_numpy(np.float64)[:, None])
        x = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
        if self.kind is TaskKind.SURVIVAL:
            t = pd.to_numeric(frame[str(self.time)]).to_numpy(np.float64)
            e = pd.to_numeric(frame[str(self.event)]).to_numpy(np.float64)
            return x, np.stack([t, e], axis=1)
        if self.kind is TaskKind.REGRESSION:
            return x, pd.to_numeric(frame[str(self.label)]).to_numpy(np.float32)
        order = {v: i for i, v in enumerate(self.classes())}
        y = np.array([order[str(v)] for v in frame[str(self.label)]], dtype=np.int64)
        return x, y


def _problems(cases: pd.DataFrame) -> list[Problem]:
    out = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        rule = _rule_text(str(check))
        if rule is None:
            continue
        rows = sorted({int(i) + 1 for i in group["index"].dropna()})
        out.append(Problem(str(column), rule, len(rows) or len(group), tuple(rows[:5])))
    # a value that is not a number also fails the range checks: say it once
    return out


def _rule_text(check: str) -> str | None:
    if check.startswith("coerce_dtype"):
        return "not a number"
    if check.startswith("dtype("):
        return None  # the same cells as coerce_dtype
    if check == "not_nullable":
        return "missing values"
    if check == "field_uniqueness":
        return "a patient id appears more than once"
    return f"must be {check}"


# --- reading a contract file -----------------------------------------------------------


def read_contract_file(path: str | Path) -> tuple[Path, dict[str, Any], str]:
    """A contract file's path, its TOML and the sha256 of its bytes."""
    p = Path(path).expanduser()
    try:
        raw_bytes = p.read_bytes()
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"no data contract at {p}; check the path") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{p}: not a readable TOML contract ({exc})") from None
    return p, raw, hashlib.sha256(raw_bytes).hexdigest()


def is_image_contract(raw: dict[str, Any]) -> bool:
    """An image contract names the images' ``format`` (:mod:`medfed.data.image_contract`)."""
    return "format" in raw


def read_contract(path: str | Path) -> DataContract:
    """Parse and check a table's contract file; every problem is one :class:`DataError`."""
    p, raw, sha256 = read_contract_file(path)
    if is_image_contract(raw):
        raise DataError(
            f"{p} is a contract for images (format = {raw['format']!r}), not for a table: "
            'give it with an image data set file (images = "…")'
        )
    return contract_from_dict(raw, where=str(p), sha256=sha256, path=p)


def contract_from_dict(
    raw: dict[str, Any], *, where: str, sha256: str = "", path: Path | None = None
) -> DataContract:
    def fail(message: str) -> DataError:
        return DataError(f"{where}: {message}")

    unknown = sorted(set(raw) - _TOP - {"columns"})
    if unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(_TOP | {"columns"}), n=1)
        raise fail(
            f"unknown key {unknown[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    for key in ("name", "version"):
        if not isinstance(raw.get(key), str | int) or not str(raw.get(key)).strip():
            raise fail(f'{key} = "…" is required (the contract is versioned with the job)')
    kind = raw.get("task")
    if kind not in {"binary", "multiclass", "survival", "regression"}:
        raise fail(f"task must be binary, multiclass, survival or regression, not {kind!r}")
    task = TaskKind(kind)
    missing = raw.get("missing", "impute")
    if missing not in ("impute", "drop", "refuse"):
        raise fail(f'missing must be "impute", "drop" or "refuse", not {missing!r}')
    table = raw.get("columns")
    if not isinstance(table, dict) or not table:
        raise fail("[columns.NAME] tables are required: one per column of the data")
    columns = tuple(_column_rule(name, spec, fail) for name, spec in table.items())
    names = {c.name for c in columns}
    outcome = ("time", "event") if task is TaskKind.SURVIVAL else ("label",)
    for key in (*outcome, "id_column"):
        value = raw.get(key)
        if value is None and key == "id_column":
            continue
        if not isinstance(value, str) or value not in names:
            raise fail(f"{key} must name one of the [columns] ({value!r} is not one)")
    contract = DataContract(
        name=str(raw["name"]),
        version=str(raw["version"]),
        kind=task,
        columns=columns,
        label=raw.get("label"),
        time=raw.get("time"),
        event=raw.get("event"),
        positive=None if raw.get("positive") is None else str(raw["positive"]),
        id_column=raw.get("id_column"),
        missing=missing,
        sha256=sha256,
        path=path,
    )
    if task is TaskKind.REGRESSION:
        label = contract.rule(str(contract.label))
        if label.type not in ("number", "integer"):
            raise fail(f"a regression label {label.name!r} is a number or integer column")
        if contract.positive is not None:
            raise fail("positive is for a binary task only")
    elif task is not TaskKind.SURVIVAL:
        label = contract.rule(str(contract.label))
        if label.type != "category" or len(label.categories) < 2:
            raise fail(f"the label {label.name!r} must be a category with at least two values")
        if task is TaskKind.BINARY and len(label.categories) != 2:
            raise fail(
                f"a binary label has two categories, {label.name!r} has {len(label.categories)}"
            )
        if contract.positive is not None and contract.positive not in label.categories:
            raise fail(f"positive = {contract.positive!r} is not a category of {label.name!r}")
    if not contract.features:
        raise fail("the contract has no feature column besides the outcome and the id")
    text = [c.name for c in contract.features if c.type == "text"]
    if text:
        raise fail(
            f"[columns.{text[0]}] is text, which a model cannot learn from: make it a category "
            "(with its categories) or the id_column"
        )
    return contract


def _column_rule(name: str, spec: Any, fail: Any) -> ColumnRule:
    if not isinstance(spec, dict):
        raise fail(f"[columns.{name}] must be a table (type = …)")
    unknown = sorted(set(spec) - _COLUMN_KEYS)
    if unknown:
        raise fail(
            f"[columns.{name}]: unknown key {unknown[0]!r}; the keys are {sorted(_COLUMN_KEYS)}"
        )
    kind = spec.get("type")
    if kind not in _TYPES:
        raise fail(f"[columns.{name}] type must be one of {', '.join(_TYPES)}, not {kind!r}")
    bounds = {}
    for key in ("min", "max"):
        value = spec.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise fail(f"[columns.{name}] {key} must be a finite number")
        bounds[key] = None if value is None else float(value)
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise fail(f"[columns.{name}] min is above max")
    cats = spec.get("categories", [])
    if kind == "category":
        if not isinstance(cats, list) or not cats or len(cats) > _MAX_CATEGORIES:
            raise fail(f"[columns.{name}] a category column lists its categories = [...]")
        cats = [str(c) for c in cats]
        if len(set(cats)) != len(cats):
            raise fail(f"[columns.{name}] a category is listed twice")
        if bounds["min"] is not None or bounds["max"] is not None:
            raise fail(f"[columns.{name}] min and max are for numbers, not categories")
    elif cats:
        raise fail(f'[columns.{name}] categories are for type = "category"')
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise fail(f"[columns.{name}] required must be true or false")
    unit = spec.get("unit", "")
    return ColumnRule(
        name=name,
        type=kind,
        unit=str(unit),
        min=bounds["min"],
        max=bounds["max"],
        categories=tuple(cats),
        required=required,
    )
