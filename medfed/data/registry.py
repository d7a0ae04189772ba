"""The bundled data sets by name: what exists, what each accepts, and loading one.

>>> [d.name for d in available_datasets()]  # doctest: +NORMALIZE_WHITESPACE
['breast-cancer', 'diabetes', 'lung', 'synthetic-ehr', 'synthetic-imaging',
 'synthetic-segmentation', 'tcga-brca']
>>> ds = load_dataset("synthetic-ehr", num_sites=3, seed=1, options={"alpha": 0.5})
>>> ds.site_names
['hospital-01', 'hospital-02', 'hospital-03']

Every mistake a user can make here (an unknown name or option, a bad value, a site count
the data set cannot give, a missing folder) raises :class:`~medfed.errors.DataError` with
a message that says what to do instead. ``seed`` changes only the synthetic generators:
the real data sets' splits are fixed, so their hospitals are the same in every run.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.data import (
    breast_cancer,
    diabetes,
    lung,
    synthetic_ehr,
    synthetic_imaging,
    synthetic_segmentation,
    tcga_brca,
)
from medfed.data.base import FederatedDataset, TaskKind
from medfed.data.files import is_data_file, load_data_file
from medfed.errors import DataError

__all__ = ["DatasetInfo", "OptionInfo", "available_datasets", "load_dataset"]

OptionValue = bool | int | float | str
MAX_SITES = 10_000
_EHR_PER_SITE = 100  # default size of a generated consortium with many sites, per site
_IMG_PER_SITE = 50


@dataclass(frozen=True)
class OptionInfo:
    """One option a data set accepts (``options={name: value}``)."""

    name: str
    type: type[bool] | type[int] | type[float]
    default: bool | int | float
    help: str


@dataclass(frozen=True)
class DatasetInfo:
    """What ``medfed data list`` shows about a data set."""

    name: str
    kind: TaskKind
    description: str
    real: bool
    """Real patients (True) or generated ones (False)."""
    sites: int
    """The natural site count (``fixed_sites``) or the default one."""
    fixed_sites: bool
    """True when the data decide the site count (a different one is an error)."""
    needs_data_dir: bool
    """True when the data are not shipped and ``data_dir`` must point at them."""
    options: tuple[OptionInfo, ...] = ()


_Loader = Callable[[int | None, Path | None, int, dict[str, Any]], FederatedDataset]


def _load_breast_cancer(
    sites: int | None, _dir: Path | None, _seed: int, _opts: dict[str, Any]
) -> FederatedDataset:
    return breast_cancer.load_breast_cancer(num_sites=sites or breast_cancer.DEFAULT_SITES)


def _load_diabetes(
    sites: int | None, _dir: Path | None, _seed: int, _opts: dict[str, Any]
) -> FederatedDataset:
    return diabetes.load_diabetes(num_sites=sites or diabetes.DEFAULT_SITES)


def _load_segmentation(
    sites: int | None, _dir: Path | None, seed: int, opts: dict[str, Any]
) -> FederatedDataset:
    if sites is not None:
        per_site = synthetic_segmentation.DEFAULT_PER_SITE
        default_size = max(synthetic_segmentation.SegmentationOptions.num_images, per_site * sites)
        opts = {"num_images": default_size, **opts, "num_sites": sites}
    return synthetic_segmentation.generate_segmentation(
        seed=seed, options=synthetic_segmentation.SegmentationOptions(**opts)
    )


def _load_lung(
    sites: int | None, _dir: Path | None, _seed: int, opts: dict[str, Any]
) -> FederatedDataset:
    return lung.load_lung(num_sites=sites, **opts)


def _load_ehr(
    sites: int | None, _dir: Path | None, seed: int, opts: dict[str, Any]
) -> FederatedDataset:
    if sites is not None:
        default_size = max(synthetic_ehr.EhrOptions.num_patients, _EHR_PER_SITE * sites)
        opts = {"num_patients": default_size, **opts, "num_sites": sites}
    return synthetic_ehr.generate_ehr(seed=seed, options=synthetic_ehr.EhrOptions(**opts))


def _load_imaging(
    sites: int | None, _dir: Path | None, seed: int, opts: dict[str, Any]
) -> FederatedDataset:
    if sites is not None:
        default_size = max(synthetic_imaging.ImagingOptions.num_images, _IMG_PER_SITE * sites)
        opts = {"num_images": default_size, **opts, "num_sites": sites}
    return synthetic_imaging.generate_imaging(
        seed=seed, options=synthetic_imaging.ImagingOptions(**opts)
    )


def _load_tcga(
    sites: int | None, data_dir: Path | None, _seed: int, opts: dict[str, Any]
) -> FederatedDataset:
    return tcga_brca.load_tcga_brca(data_dir, num_sites=sites, **opts)


_EHR = synthetic_ehr.EhrOptions()
_IMG = synthetic_imaging.ImagingOptions()
_SEG = synthetic_segmentation.SegmentationOptions()

_REGISTRY: dict[str, tuple[DatasetInfo, _Loader]] = {
    "breast-cancer": (
        DatasetInfo(
            name="breast-cancer",
            kind=TaskKind.BINARY,
            description="Wisconsin breast cancer biopsies (569) in 2–8 invented hospitals "
            "that differ in size, malignancy rate and tumour size",
            real=True,
            sites=breast_cancer.DEFAULT_SITES,
            fixed_sites=False,
            needs_data_dir=False,
        ),
        _load_breast_cancer,
    ),
    "diabetes": (
        DatasetInfo(
            name="diabetes",
            kind=TaskKind.REGRESSION,
            description="diabetes progression after one year (442 patients, regression) in "
            "2–6 invented hospitals that differ in size, age, body-mass index and sex",
            real=True,
            sites=diabetes.DEFAULT_SITES,
            fixed_sites=False,
            needs_data_dir=False,
        ),
        _load_diabetes,
    ),
    "lung": (
        DatasetInfo(
            name="lung",
            kind=TaskKind.SURVIVAL,
            description="NCCTG advanced lung cancer survival (228 patients), one site per "
            "enrolling institution, small ones merged",
            real=True,
            sites=lung.NATURAL_SITES,
            fixed_sites=True,
            needs_data_dir=False,
            options=(
                OptionInfo(
                    "min_patients",
                    int,
                    lung.DEFAULT_MIN_PATIENTS,
                    "institutions with fewer patients are merged into one site "
                    f"({lung.MIN_MIN_PATIENTS}–{lung.MAX_MIN_PATIENTS})",
                ),
            ),
        ),
        _load_lung,
    ),
    "synthetic-ehr": (
        DatasetInfo(
            name="synthetic-ehr",
            kind=TaskKind.BINARY,
            description="generated EHR records (12 features) with a 30-day readmission "
            "outcome; knobs for label skew, covariate shift and size skew",
            real=False,
            sites=_EHR.num_sites,
            fixed_sites=False,
            needs_data_dir=False,
            options=(
                OptionInfo(
                    "num_patients",
                    int,
                    _EHR.num_patients,
                    f"patients in all sites (at least {_EHR_PER_SITE} per site by default)",
                ),
                OptionInfo("alpha", float, _EHR.alpha, "label skew: Dirichlet α, inf = none"),
                OptionInfo("covariate_shift", float, _EHR.covariate_shift, "0 = same populations"),
                OptionInfo("size_skew", float, _EHR.size_skew, "0 = equal site sizes"),
                OptionInfo("standardize", bool, _EHR.standardize, "false = raw clinical units"),
            ),
        ),
        _load_ehr,
    ),
    "synthetic-imaging": (
        DatasetInfo(
            name="synthetic-imaging",
            kind=TaskKind.BINARY,
            description="generated greyscale scans, lesion or not, each site with its own "
            "scanner (blur, contrast, gain, noise)",
            real=False,
            sites=_IMG.num_sites,
            fixed_sites=False,
            needs_data_dir=False,
            options=(
                OptionInfo(
                    "num_images",
                    int,
                    _IMG.num_images,
                    f"scans in all sites (at least {_IMG_PER_SITE} per site by default)",
                ),
                OptionInfo("image_size", int, _IMG.image_size, "side in pixels (16–64)"),
                OptionInfo("prevalence", float, _IMG.prevalence, "share of lesion scans"),
                OptionInfo("alpha", float, _IMG.alpha, "prevalence skew: Dirichlet α, inf = none"),
                OptionInfo("scanner_shift", float, _IMG.scanner_shift, "0 = identical scanners"),
                OptionInfo("size_skew", float, _IMG.size_skew, "0 = equal site sizes"),
            ),
        ),
        _load_imaging,
    ),
    "synthetic-segmentation": (
        DatasetInfo(
            name="synthetic-segmentation",
            kind=TaskKind.SEGMENTATION,
            description="generated scans (2D slices or 3D volumes) with a tumour mask to "
            "segment, each site with its own scanner (intensity, contrast, noise)",
            real=False,
            sites=_SEG.num_sites,
            fixed_sites=False,
            needs_data_dir=False,
            options=(
                OptionInfo(
                    "num_images",
                    int,
                    _SEG.num_images,
                    "scans in all sites (at least "
                    f"{synthetic_segmentation.DEFAULT_PER_SITE} per site by default)",
                ),
                OptionInfo("image_size", int, _SEG.image_size, "side in pixels (16–64)"),
                OptionInfo("volume", bool, _SEG.volume, "true = 3D volumes, false = 2D slices"),
                OptionInfo("depth", int, _SEG.depth, "slices of a volume (8–32)"),
                OptionInfo("tumour_rate", float, _SEG.tumour_rate, "share of scans with a tumour"),
                OptionInfo("scanner_shift", float, _SEG.scanner_shift, "0 = identical scanners"),
                OptionInfo("size_skew", float, _SEG.size_skew, "0 = equal site sizes"),
            ),
        ),
        _load_segmentation,
    ),
    "tcga-brca": (
        DatasetInfo(
            name="tcga-brca",
            kind=TaskKind.SURVIVAL,
            description="Fed-TCGA-BRCA breast cancer survival (1,088 patients), FLamby's "
            "6 regions; needs --data-dir",
            real=True,
            sites=tcga_brca.NUM_SITES,
            fixed_sites=True,
            needs_data_dir=True,
            options=(
                OptionInfo("standardize", bool, False, "rescale age (FLamby keeps it in years)"),
            ),
        ),
        _load_tcga,
    ),
}


def available_datasets() -> list[DatasetInfo]:
    """Every data set :func:`load_dataset` knows, in name order."""
    return [info for info, _ in _REGISTRY.values()]


def _load_file(
    name: str,
    *,
    num_sites: int | None,
    data_dir: str | Path | None,
    options: Mapping[str, OptionValue] | None,
    raw: bool,
) -> FederatedDataset:
    """A data set file: its sites are the file's; it takes no folder and no options."""
    if data_dir is not None:
        raise DataError(f"{name}: a data set file names its own tables; drop the data folder")
    if options:
        raise DataError(
            f"{name}: a data set file takes no options ({', '.join(options)}); set them in the file"
        )
    dataset = load_data_file(name, raw=raw)
    if num_sites is not None and num_sites != len(dataset.sites):
        raise DataError(
            f"{name} has {len(dataset.sites)} sites ({', '.join(dataset.site_names)}), not "
            f"{num_sites}; drop the site count"
        )
    return dataset


def _lookup(name: str) -> tuple[DatasetInfo, _Loader]:
    key = name.strip().lower().replace("_", "-")
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, _REGISTRY, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise DataError(
        f"unknown data set {name!r}: {hint}choose one of {', '.join(_REGISTRY)} "
        "(see `medfed data list`), or give a data set file (a .toml path, see medfed.data.files)"
    )


def _coerce(dataset: str, option: OptionInfo, value: object) -> bool | int | float:
    """``value`` as the option's type; strings (from a command line) are parsed."""
    expected = {bool: "true or false", int: "a whole number", float: "a number"}[option.type]
    problem = DataError(
        f"{dataset}: option {option.name} must be {expected}, got {value!r} "
        f"({option.help}; default {option.default})"
    )
    if option.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "on"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"false", "no", "0", "off"}:
            return False
        raise problem
    if isinstance(value, bool):
        raise problem
    if option.type is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise problem from None
        raise problem
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise problem from None
    else:
        raise problem
    if math.isnan(number):
        raise problem
    return number


def _parse_options(info: DatasetInfo, options: Mapping[str, OptionValue] | None) -> dict[str, Any]:
    known = {o.name: o for o in info.options}
    parsed: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in known:
            if not known:
                raise DataError(f"{info.name} takes no options: remove {key!r}")
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(
                f"{info.name} has no option {key!r}: {hint}its options are {', '.join(known)}"
            )
        parsed[key] = _coerce(info.name, known[key], value)
    return parsed


def load_dataset(
    name: str,
    *,
    num_sites: int | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    options: Mapping[str, OptionValue] | None = None,
    raw: bool = False,
) -> FederatedDataset:
    """Load a data set by name, split into sites.

    ``num_sites`` None means the data set's natural or default count. ``data_dir`` is
    used only by data sets that are not shipped (``tcga-brca``); ``seed`` only by the
    synthetic generators. ``options`` are the data set's own knobs
    (:attr:`DatasetInfo.options`); strings are parsed, so command-line values work.
    ``raw``: a data set file's numbers as its tables hold them (gaps NaN, no site
    standardising alone; see :func:`~medfed.data.files.load_data_file`).
    """
    if is_data_file(name):
        return _load_file(name, num_sites=num_sites, data_dir=data_dir, options=options, raw=raw)
    info, loader = _lookup(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"{info.name}: the seed must be a whole number >= 0, not {seed!r}")
    if num_sites is not None and (
        isinstance(num_sites, bool) or not isinstance(num_sites, int) or num_sites < 1
    ):
        raise DataError(
            f"{info.name}: the site count must be a whole number >= 1, not {num_sites!r}"
        )
    if num_sites is not None and num_sites > MAX_SITES:
        raise DataError(f"{info.name}: at most {MAX_SITES} sites, not {num_sites}")
    parsed = _parse_options(info, options)
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    return loader(num_sites, folder, seed, parsed)
