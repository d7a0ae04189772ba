"""Data sets for federated experiments: real ones split into hospitals, and generators.

>>> from medfed.data import load_dataset
>>> ds = load_dataset("breast-cancer")
>>> ds.site_names
['academic-centre', 'community-north', 'oncology-clinic', 'screening-clinic']

``available_datasets()`` lists what :func:`load_dataset` knows. Importing this package is
cheap: scikit-learn, lifelines and pandas are never imported by it (their shipped files are
read directly).
"""

from __future__ import annotations

from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.registry import DatasetInfo, OptionInfo, available_datasets, load_dataset

__all__ = [
    "DataSpec",
    "DatasetInfo",
    "FederatedDataset",
    "OptionInfo",
    "SiteData",
    "TaskKind",
    "available_datasets",
    "load_dataset",
]
