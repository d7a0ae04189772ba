"""The outcome as pseudo-features of a site's statistics table: only sent when a query names it."""

from __future__ import annotations

import numpy as np

from medfed.data import load_dataset
from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.data.statistics import SiteQuery, contribution, outcome_names, site_table


def test_a_binary_label_is_a_column_only_when_named() -> None:
    d = load_dataset("breast-cancer", seed=0)
    site = d.sites[0]
    table = site_table(site, d.spec)
    assert table.outcome_names == ("label",)
    y = np.concatenate([site.y_train, site.y_test]).astype(float)
    plain = contribution(table, SiteQuery(stage="moments", features=table.names[:2]))
    assert "label" not in table.names and plain["present"].size == 2
    named = contribution(table, SiteQuery(stage="moments", features=(table.names[0], "label")))
    assert named["sum"][1] == y.sum() and named["present"][1] == y.size


def test_survival_outcome_and_a_name_a_feature_already_has() -> None:
    spec = DataSpec(kind=TaskKind.SURVIVAL, input_shape=(2,), feature_names=("event", "age"))
    assert outcome_names(spec) == ("event (outcome)", "follow-up")
    y = np.array([[5.0, 1.0], [7.0, 0.0], [9.0, 1.0]])
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    data = SiteData(name="s", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    table = site_table(data, spec)
    got = table.columns(("event", "event (outcome)", "follow-up"))
    assert got[:, 0].tolist() == [0.0, 2.0, 4.0]  # the feature, not the outcome
    assert got[:, 1].tolist() == [1.0, 0.0, 1.0] and got[:, 2].tolist() == [5.0, 7.0, 9.0]
