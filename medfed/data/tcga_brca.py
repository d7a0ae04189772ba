"""Fed-TCGA-BRCA: breast cancer survival in 6 regions, the split published by FLamby.

The data (not shipped with medfed; pass its folder): open-access clinical data of The
Cancer Genome Atlas breast invasive carcinoma cohort, preprocessed and split as in the
FLamby benchmark (Ogier du Terrail et al., NeurIPS 2022; preprocessing of Andreux et al.
2020). The folder holds:

- ``brca.csv``: ``pid``, 39 numeric features (one-hot clinical variables and age in
  years), ``E`` (1 = death observed) and ``T`` (days). It has 1,096 rows; the 8 patients
  absent from the split file are not used (as in FLamby);
- ``train_test_split.csv``: ``pid``, ``fold`` (train/test) and ``fold2``
  (``train_K``/``test_K`` for region K = 0..5).

Sites are the regions ``region-0`` … ``region-5``: patients grouped by the geographic
region of the tissue source site. The heterogeneity is real: region sizes range from 51 to
311 patients, death rates in the training sets from 5 % to 22 %, and the clinical mix
differs. Per-region train/test sizes are checked against the published ones
(:data:`PUBLISHED_SIZES`), and the files against the sha256 prefixes published with the
data, so a modified copy fails loudly instead of giving quietly different results.

Features are FLamby's exactly (age in years, the rest 0/1), in ``brca.csv`` row order
within each region, so published baselines apply. ``standardize=True`` instead rescales
age with fixed constants (the full table's mean and standard deviation), which helps plain
SGD; the one-hot columns are left as they are. ``y`` is ``[T, E]`` (float64).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.errors import DataError

__all__ = ["NUM_SITES", "PUBLISHED_SIZES", "SHA256_PREFIXES", "load_tcga_brca"]

NUM_SITES = 6
PUBLISHED_SIZES: tuple[tuple[int, int], ...] = (
    (248, 63),
    (156, 40),
    (164, 42),
    (129, 33),
    (129, 33),
    (40, 11),
)
"""(train, test) patients of region 0..5, as published by FLamby."""

SHA256_PREFIXES: dict[str, tuple[str, str]] = {
    "brca.csv": ("07cb5342", "a020"),
    "train_test_split.csv": ("1249c654", "0990"),
}
"""First and last hex digits of each file's sha256, as given with the data."""

_N_FEATURES = 39
_HINT = "pass `--data-dir PATH` pointing at the folder that holds brca.csv"


def _check_folder(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise DataError(f"tcga-brca: no folder at {data_dir}: {_HINT}")
    absent = [name for name in SHA256_PREFIXES if not (data_dir / name).is_file()]
    if absent:
        raise DataError(f"tcga-brca: {data_dir} lacks {', '.join(absent)}: {_HINT}")
    for name, (head, tail) in SHA256_PREFIXES.items():
        digest = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        if not (digest.startswith(head) and digest.endswith(tail)):
            raise DataError(
                f"tcga-brca: {data_dir / name} has sha256 {digest[:8]}…{digest[-4:]}, "
                f"expected {head}…{tail}: the file is not the published one; get a fresh "
                f"copy of the Fed-TCGA-BRCA folder"
            )


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"tcga-brca: {path} is empty: {_HINT}")
    return rows[0], rows[1:]


def _read_features(
    path: Path,
) -> tuple[tuple[str, ...], list[str], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    header, body = _read_rows(path)
    if header[0] != "pid" or header[-2:] != ["E", "T"] or len(header) != _N_FEATURES + 3:
        raise DataError(
            f"tcga-brca: {path} should have columns pid, {_N_FEATURES} features, E, T; "
            f"got {len(header)} columns: get a fresh copy of the folder"
        )
    pids = [row[0] for row in body]
    values = np.array([row[1:] for row in body], dtype=np.float64)
    x, y = values[:, :_N_FEATURES], values[:, [_N_FEATURES + 1, _N_FEATURES]]  # [T, E]
    return tuple(header[1 : _N_FEATURES + 1]), pids, x, y


def _read_split(path: Path) -> dict[str, str]:
    header, body = _read_rows(path)
    if header[:1] != ["pid"] or "fold2" not in header:
        raise DataError(f"tcga-brca: {path} should have columns pid, fold, fold2: {_HINT}")
    col = header.index("fold2")
    return {row[0]: row[col] for row in body}


def load_tcga_brca(
    data_dir: str | Path | None,
    *,
    num_sites: int | None = None,
    standardize: bool = False,
) -> FederatedDataset:
    """The six Fed-TCGA-BRCA regions from the folder ``data_dir``.

    ``data_dir`` is the folder holding ``brca.csv``, or its parent if the folder is named
    ``tcga_brca``. A missing or altered folder raises :class:`DataError`.
    """
    if data_dir is None:
        raise DataError(f"tcga-brca is not shipped with medfed: {_HINT}")
    if num_sites is not None and num_sites != NUM_SITES:
        raise DataError(
            f"tcga-brca has exactly {NUM_SITES} sites (its regions), not {num_sites}: "
            "leave the site count unset"
        )
    folder = Path(data_dir).expanduser()
    if not (folder / "brca.csv").exists() and (folder / "tcga_brca" / "brca.csv").exists():
        folder = folder / "tcga_brca"  # the shared data folder that holds tcga_brca/
    _check_folder(folder)
    names, pids, x, y = _read_features(folder / "brca.csv")
    fold_of = _read_split(folder / "train_test_split.csv")
    if standardize:
        age = names.index("age_at_index")
        x[:, age] = (x[:, age] - x[:, age].mean()) / x[:, age].std()

    folds = np.array([fold_of.get(pid, "") for pid in pids])
    sites = []
    for region, (n_train, n_test) in enumerate(PUBLISHED_SIZES):
        train = np.flatnonzero(folds == f"train_{region}")
        test = np.flatnonzero(folds == f"test_{region}")
        if (len(train), len(test)) != (n_train, n_test):
            raise DataError(
                f"tcga-brca: region {region} has {len(train)}/{len(test)} train/test "
                f"patients, the published split has {n_train}/{n_test}: get a fresh copy "
                f"of the folder"
            )
        sites.append(
            SiteData(
                name=f"region-{region}",
                x_train=x[train].astype(np.float32),
                y_train=y[train],
                x_test=x[test].astype(np.float32),
                y_test=y[test],
                description=f"TCGA-BRCA patients of geographic region {region} (FLamby)",
            )
        )
    return FederatedDataset(
        name="tcga-brca",
        spec=DataSpec(
            kind=TaskKind.SURVIVAL,
            input_shape=(_N_FEATURES,),
            n_classes=2,
            feature_names=names,
        ),
        sites=tuple(sites),
        description=(
            "Fed-TCGA-BRCA: breast cancer overall survival, 39 clinical features, "
            "6 regions (FLamby's published split)"
        ),
        source=(
            "The Cancer Genome Atlas (GDC open access), preprocessed and split by FLamby "
            "(Ogier du Terrail et al., NeurIPS 2022)"
        ),
        notes={
            "split": "fixed by the data files (train_test_split.csv)",
            "preprocessing": "none (FLamby's features)"
            if not standardize
            else "age standardised with the full table's mean and standard deviation",
            "metric": "concordance index per region, averaged over regions",
        },
    )
