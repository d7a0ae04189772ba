"""The data-quality report over a simulated federation (``medfed data quality``).

Each simulated site loads only its own share and answers statistics only, as in ``medfed
stats`` (:func:`~medfed.orchestration.statistics.simulated_sites`); a data set file is read
as recorded — missing values kept (the loader would otherwise fill them with the site's mean,
hiding the missingness the report is for) and without any per-site standardisation the file
asks of training (``standardize = "site"`` would give every site mean 0 and sd 1 by
construction, so no shift could be seen).
"""

from __future__ import annotations

import dataclasses

from medfed.config import BackendConfig, DataConfig
from medfed.data.base import FederatedDataset
from medfed.errors import DataError
from medfed.orchestration.quality import QualityReport, QualityThresholds, quality_report
from medfed.orchestration.statistics import simulated_sites

__all__ = ["quality_dataset", "simulate_quality"]


def quality_dataset(data: DataConfig, *, seed: int = 0) -> FederatedDataset:
    """The data set as the report reads it: a data set file's values as recorded."""
    from medfed.data import load_dataset
    from medfed.data.data_file import is_data_file

    if is_data_file(data.name) and data.sites is not None:
        raise DataError(f"{data.name}: a data set file names its own sites; drop --sites")
    return load_dataset(data.name, num_sites=data.sites, data_dir=data.dir, seed=seed,
                        options=data.options, raw=True)  # fmt: skip


def simulate_quality(
    data: DataConfig,
    *,
    seed: int = 0,
    features: tuple[str, ...] = (),
    secure_aggregation: bool = False,
    min_count: int = 10,
    thresholds: QualityThresholds | None = None,
    backend: BackendConfig | None = None,
) -> QualityReport:
    """The data-quality report over the simulated sites of ``data``."""

    dataset = quality_dataset(data, seed=seed)
    be, secure = simulated_sites(
        data, seed=seed, names=dataset.site_names, secure_aggregation=secure_aggregation,
        job="quality", backend=backend,
    )  # fmt: skip
    try:
        report = quality_report(be, dataset.spec, features=features, secure=secure,
                                min_count=min_count, thresholds=thresholds)  # fmt: skip
    finally:
        be.close()
    from medfed.data.data_file import is_data_file

    if is_data_file(data.name):
        return report
    note = (
        f"{dataset.name} is a bundled data set, read as its loader prepares it (missing values "
        "filled, features in the loader's units): its missingness and ranges are those of the "
        "prepared data"
    )
    return dataclasses.replace(report, notes=(*report.notes, note))
