"""The data sets a hospital's node serves: registered once by the data steward, by name.

``medfed node dataset add NAME PATH --contract FILE`` registers a table (CSV or Parquet) or a
data set file (:mod:`medfed.data.files`) under ``NAME``; ``medfed node start --data NAME``
then serves it, and a job names it (and its contract). What is kept, in the node's state
folder::

    STATE/datasets/registry.json        name -> path, contract, split, who added it, when
    STATE/datasets/NAME.toml            the data set file the node reads (a table: generated)
    STATE/datasets/NAME.contract.toml   the contract as registered (a later edit of the
                                        original file changes nothing until registered again)

A table at a node is always served under a contract: the contract, not this hospital's
records, fixes the columns, their encoding and so the model's input at every site. Nothing
here leaves the node: checking a data set against its contract gives the steward every
broken rule with its rows, and a job only ever hears the summary.

An image data set file (:mod:`medfed.data.images`) is registered like a table's data set
file: every folder, labels file, image and mask it names must lie in its folder (symbolic
links resolved), its contract (if any) is copied and pinned by sha256, and its files are
pinned by a manifest (:mod:`medfed.data.image_manifest`: the labels files by sha256, the
images and masks by name and size, kept in ``STATE/datasets/NAME.manifest.json``). A node
whose registered images changed since registration does not start with them: the steward
looks at the change and registers the data set again (``--replace``).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import tomli_w

from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.data.contract import ContractReport, DataContract, Problem, read_contract
from medfed.data.data_file import describes_images, read_toml
from medfed.data.files import TableSource, load_data_file, read_source, read_table
from medfed.data.image_contract import ImageContract, read_any_contract
from medfed.data.image_manifest import Manifest, check_inside, manifest_of
from medfed.data.image_source import ImageSource, read_image_source
from medfed.data.images import load_image_sites
from medfed.errors import DataError
from medfed.serde import atomic_write

__all__ = ["DatasetRegistry", "RegisteredDataset", "ServedData"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TABLES = {".csv", ".parquet", ".pq"}


@dataclass(frozen=True)
class RegisteredDataset:
    name: str
    path: str  # what the steward registered (absolute)
    contract: str | None  # the registered copy's path
    contract_sha256: str | None
    contract_title: str | None
    test_fraction: float
    seed: int
    added_by: str
    added_at: float
    manifest_sha256: str | None = None  # an image data set: the digest of its manifest


@dataclass(frozen=True)
class ServedData:
    """What a node serves for a registered data set."""

    entry: RegisteredDataset
    data: SiteData
    spec: DataSpec
    contract: DataContract | ImageContract | None
    report: ContractReport | None


class DatasetRegistry:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def in_state(cls, state_dir: str | Path) -> DatasetRegistry:
        return cls(Path(state_dir) / "datasets")

    @property
    def _index(self) -> Path:
        return self.folder / "registry.json"

    def _read(self) -> dict[str, RegisteredDataset]:
        try:
            raw = json.loads(self._index.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"the data set registry {self._index} is unreadable ({exc})") from None
        return {name: RegisteredDataset(**entry) for name, entry in raw.items()}

    def _write(self, entries: dict[str, RegisteredDataset]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        body = {name: asdict(e) for name, e in sorted(entries.items())}
        atomic_write(self._index, json.dumps(body, indent=2) + "\n")

    def list(self) -> list[RegisteredDataset]:
        return list(self._read().values())

    def get(self, name: str) -> RegisteredDataset:
        entries = self._read()
        if name not in entries:
            known = ", ".join(entries) or "none yet"
            raise DataError(
                f"no data set {name!r} is registered on this node (registered: {known}); "
                "add it with medfed node dataset add NAME PATH --contract FILE"
            )
        return entries[name]

    def has(self, name: str) -> bool:
        return name in self._read()

    def add(
        self,
        name: str,
        path: str | Path,
        *,
        contract: str | Path | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        by: str,
        replace: bool = False,
    ) -> ServedData:
        """Register ``path`` as ``name``; it is loaded (and checked) before it is kept."""
        if not _NAME.match(name):
            raise DataError(
                f"a data set name is 1–64 lower-case letters, digits, '.', '_' or '-': {name!r}"
            )
        entries = self._read()
        if name in entries and not replace:
            raise DataError(f"{name!r} is registered already; pass --replace to register it again")
        source = Path(path).expanduser().absolute()
        if not source.is_file():
            raise DataError(f"no file at {source}; give a CSV or Parquet table or a data set file")
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_file = self.folder / f"{name}.toml"
        contract_copy = self.folder / f"{name}.contract.toml"
        staged: DataContract | ImageContract | None
        manifest: Manifest | None = None
        if source.suffix.lower() == ".toml" and describes_images(read_toml(source)[1]):
            if contract is not None:
                raise DataError(
                    f"{source} is a data set file: it names its contract itself (contract = …)"
                )
            images = read_image_source(source)
            check_inside(source, images)
            staged = images.contract
            if staged is not None and staged.path is not None:
                shutil.copyfile(staged.path, contract_copy)
            manifest = manifest_of(images, source.parent)
            text = source.read_text(encoding="utf-8")
            atomic_write(spec_file, _repoint(text, source, contract_copy if staged else None))
            atomic_write(self.folder / f"{name}.manifest.json", manifest.to_json() + "\n")
        elif source.suffix.lower() in _TABLES:
            if contract is None:
                raise DataError(
                    "a table at a node is served under a data contract (it fixes the columns, "
                    "their encoding and the model's input at every site): add --contract FILE"
                )
            staged = read_contract(contract)  # checked before anything is written
            shutil.copyfile(Path(contract).expanduser(), contract_copy)
            body = {
                "contract": contract_copy.name,
                "test_fraction": test_fraction,
                "seed": seed,
                "sites": {"local": {"train": str(source)}},
            }
            atomic_write(spec_file, tomli_w.dumps(body))
        elif source.suffix.lower() == ".toml":
            if contract is not None:
                raise DataError(
                    f"{source} is a data set file: it names its contract itself (contract = …)"
                )
            parsed = read_source(source)
            _inside(source, parsed)
            staged = parsed.contract
            if staged is not None and staged.path is not None:
                shutil.copyfile(staged.path, contract_copy)
            text = source.read_text(encoding="utf-8")
            atomic_write(spec_file, _repoint(text, source, contract_copy if staged else None))
        else:
            raise DataError(f"{source}: register a .csv or .parquet table, or a data set file")
        entry = RegisteredDataset(
            name=name,
            path=str(source),
            contract=str(contract_copy) if staged is not None else None,
            contract_sha256=None if staged is None else staged.sha256,
            contract_title=None if staged is None else staged.title,
            test_fraction=test_fraction,
            seed=seed,
            added_by=by,
            added_at=time.time(),
            manifest_sha256=None if manifest is None else manifest.digest,
        )
        served = self._load(entry)
        if served.report is not None and not served.report.passed:
            raise DataError(f"{source} {served.report}")  # the steward sees every rule broken
        entries[name] = entry
        self._write(entries)
        return served

    def remove(self, name: str) -> None:
        entries = self._read()
        self.get(name)
        del entries[name]
        self._write(entries)
        for suffix in (".toml", ".contract.toml", ".manifest.json"):
            (self.folder / f"{name}{suffix}").unlink(missing_ok=True)

    def load(self, name: str) -> ServedData:
        """The registered data set, read and checked now (the files may have changed).

        A data set that no longer passes its contract comes back without records
        (``data.num_train == 0``) and with the :attr:`ServedData.report` that says why: the
        node then declines every job with that reason instead of training on it.
        """
        return self._load(self.get(name))

    def load_raw(self, name: str) -> SiteData:
        """The registered table's records as recorded — gaps kept as NaN, no site
        standardising alone — for a job that harmonises its features with the federation's
        figures (see :func:`medfed.data.files.load_data_file`)."""
        entry = self.get(name)
        if entry.manifest_sha256 is not None:
            raise DataError(f"{name} is a data set of images; harmonisation is for tables")
        return load_data_file(self.folder / f"{entry.name}.toml", raw=True).sites[0]

    def _load(self, entry: RegisteredDataset) -> ServedData:
        if entry.manifest_sha256 is not None:
            return self._load_images(entry)
        contract = None if entry.contract is None else read_contract(entry.contract)
        if contract is not None and contract.sha256 != entry.contract_sha256:
            raise DataError(
                f"the registered contract {entry.contract} changed since it was registered; "
                "register the data set again"
            )
        report = None if contract is None else self._check(entry, contract)
        if contract is not None and report is not None and not report.passed:
            spec = contract.spec()
            empty = np.zeros((0, *spec.input_shape), np.float32)
            labels = np.zeros((0, 2) if len(contract.outcome) == 2 else 0, np.float64)
            data = SiteData(entry.name, empty, labels, empty, labels, "fails its contract")
            return ServedData(entry, data, spec, contract, report)
        dataset = load_data_file(self.folder / f"{entry.name}.toml")
        if len(dataset.sites) != 1:
            raise DataError(
                f"{entry.path} holds {len(dataset.sites)} sites ({', '.join(dataset.site_names)}); "
                "a node serves one: give the data set file of this hospital only"
            )
        return ServedData(entry, dataset.sites[0], dataset.spec, contract, report)

    def _load_images(self, entry: RegisteredDataset) -> ServedData:
        contract = self._pinned_contract(entry)
        source = self._image_source(entry)
        loaded = load_image_sites(source)
        [site] = source.sites  # checked when registered
        report = loaded.reports.get(site.name)
        spec = loaded.spec
        if site.name not in loaded.sites:
            assert report is not None  # a site is left out only by its contract
            empty = np.zeros((0, *spec.input_shape), np.float32)
            labels = _no_labels(spec)
            data = SiteData(entry.name, empty, labels, empty, labels, "fails its contract")
            return ServedData(entry, data, spec, contract, report)
        return ServedData(entry, loaded.sites[site.name], spec, contract, report)

    def _pinned_contract(self, entry: RegisteredDataset) -> DataContract | ImageContract | None:
        contract = None if entry.contract is None else read_any_contract(entry.contract)
        if contract is not None and contract.sha256 != entry.contract_sha256:
            raise DataError(
                f"the registered contract {entry.contract} changed since it was registered; "
                "register the data set again"
            )
        return contract

    def _image_source(self, entry: RegisteredDataset) -> ImageSource:
        """The registered image data set file, its files as pinned at registration."""
        source = read_image_source(self.folder / f"{entry.name}.toml")
        if len(source.sites) != 1:
            raise DataError(
                f"{entry.path} holds {len(source.sites)} sites "
                f"({', '.join(s.name for s in source.sites)}); a node serves one: give the "
                "data set file of this hospital only"
            )
        now = manifest_of(source, Path(entry.path).parent)
        if now.digest != entry.manifest_sha256:
            kept = self.folder / f"{entry.name}.manifest.json"
            try:
                change = Manifest.from_json(kept.read_text()).changes(now)
            except (OSError, ValueError, KeyError):
                change = "the manifest kept at registration is unreadable"
            raise DataError(
                f"the images of {entry.name} changed since they were registered ({change}); "
                f"check them, then register them again: medfed node dataset add {entry.name} "
                f"{entry.path} --replace"
            )
        return source

    def check(self, name: str, contract: str | Path | None = None) -> ContractReport:
        """Every rule of the registered (or the given) contract on the data set's tables or
        images."""
        entry = self.get(name)
        if entry.manifest_sha256 is not None:
            return self._check_images(entry, contract)
        return self._check(entry, read_contract(contract if contract is not None else _need(entry)))

    def _check_images(self, entry: RegisteredDataset, given: str | Path | None) -> ContractReport:
        source = self._image_source(entry)
        if given is None:
            _need(entry)
            contract = self._pinned_contract(entry)
        else:
            contract = read_any_contract(given)
        if not isinstance(contract, ImageContract):
            raise DataError(f"{given or entry.contract} is a contract for tables, not images")
        source = replace(
            source,
            contract=contract,
            kind=contract.kind,
            settings=contract.settings,
            label=contract.label or source.label,
            positive=contract.positive,
            classes=contract.class_names,
        )
        loaded = load_image_sites(source)
        return loaded.reports[source.sites[0].name]

    def _check(self, entry: RegisteredDataset, contract: DataContract) -> ContractReport:
        source = read_source(self.folder / f"{entry.name}.toml")
        tables = [s.train for s in source.sites] + [s.test for s in source.sites if s.test]
        if source.file is not None:
            tables = [source.file]
        problems: list[Problem] = []
        rows = 0
        for table in tables:
            report = contract.check(read_table(table))
            problems.extend(report.problems)
            rows += report.rows
        return ContractReport(contract.title, tuple(problems), rows=rows)


def _no_labels(spec: DataSpec) -> np.ndarray:
    if spec.kind is TaskKind.SEGMENTATION:
        return np.zeros((0, *spec.input_shape[1:]), np.int64)
    if spec.kind is TaskKind.REGRESSION:
        return np.zeros(0, np.float32)
    if spec.kind is TaskKind.SURVIVAL:
        return np.zeros((0, 2), np.float64)
    return np.zeros(0, np.int64)


def _need(entry: RegisteredDataset) -> str:
    if entry.contract is None:
        raise DataError(f"{entry.name} has no contract; give one with --contract FILE")
    return entry.contract


def _inside(source: Path, parsed: TableSource) -> None:
    """Every table a node's data set file names lies in that file's folder."""
    folder = source.parent.resolve()
    tables: list[Path | None] = [parsed.file]
    for site in parsed.sites:
        tables += [site.train, site.test]
    for table in tables:
        if table is not None and not Path(table).resolve().is_relative_to(folder):
            raise DataError(
                f"{source} names {table}, which is outside its folder {folder}: a node reads "
                "only tables kept next to the data set file it registered"
            )


def _repoint(text: str, source: Path, contract_copy: Path | None) -> str:
    """The copied data set file, its tables (and contract) named by absolute path."""
    import tomllib

    raw = tomllib.loads(text)
    if contract_copy is not None:
        raw["contract"] = str(contract_copy)
    base = source.parent
    if "file" in raw:
        raw["file"] = str((base / raw["file"]).absolute())
    for entry in raw.get("sites", {}).values():
        for key in ("train", "test", "images", "labels", "masks"):
            if key in entry:
                entry[key] = str((base / entry[key]).absolute())
    return tomli_w.dumps(raw)
