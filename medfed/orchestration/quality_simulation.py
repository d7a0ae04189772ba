"""The data-quality report over a simulated federation (``medfed data quality``).

Each simulated site loads only its own share, as in ``medfed stats``
(:class:`~medfed.orchestration.statistics.StatsSites`), but a data set file is read with its
missing values kept (the loader would otherwise fill them with the site's mean, hiding the
missingness the report is for) and without any per-site standardisation the file asks of
training (``standardize = "site"`` would give every site mean 0 and sd 1 by construction, so
no shift could be seen): the report describes the values as the hospitals recorded them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.config import BackendConfig, DataConfig
from medfed.data.base import FederatedDataset
from medfed.errors import DataError
from medfed.orchestration.backends.base import Backend
from medfed.orchestration.quality import QualityReport, QualityThresholds, quality_report
from medfed.orchestration.secure_round import SecureAggregation
from medfed.orchestration.statistics import StatsSites
from medfed.secagg import ed25519_verifier

__all__ = ["QualitySites", "quality_dataset", "simulate_quality"]


def quality_dataset(data: DataConfig, *, seed: int = 0) -> FederatedDataset:
    """The data set as the report reads it: raw values, missing values kept where the
    loader can keep them."""
    from medfed.data import load_dataset
    from medfed.data.data_file import describes_images, is_data_file, read_toml

    if is_data_file(data.name) and not describes_images(read_toml(data.name)[1]):
        if data.sites is not None:
            raise DataError(f"{data.name}: a data set file names its own sites; drop --sites")
        from medfed.data.files import load_data_file

        return load_data_file(data.name, raw=True)  # the tables' values, gaps kept
    return load_dataset(data.name, num_sites=data.sites, data_dir=data.dir, seed=seed,
                        options=data.options)  # fmt: skip


@dataclass
class QualitySites(StatsSites):
    """Simulated sites answering statistics on the report's view of the data (picklable)."""

    def _dataset(self) -> Any:
        return quality_dataset(self.data, seed=self.seed)


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
    from medfed.orchestration.backends.inprocess import InProcessBackend

    dataset = quality_dataset(data, seed=seed)
    names = dataset.site_names
    factory = QualitySites(data=data, seed=seed, names=names)
    secure = None
    if secure_aggregation:
        factory.keys = {s: ed25519.Ed25519PrivateKey.generate().private_bytes_raw() for s in names}
        public = {
            s: ed25519.Ed25519PrivateKey.from_private_bytes(k).public_key()
            for s, k in factory.keys.items()
        }
        secure = SecureAggregation(job="quality", verify_identity=ed25519_verifier(public))
    be: Backend
    if backend is not None and backend.kind == "process":
        from medfed.orchestration.backends.process_pool import ProcessPoolBackend

        be = ProcessPoolBackend(factory, workers=backend.workers)
    else:
        be = InProcessBackend(factory)
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
