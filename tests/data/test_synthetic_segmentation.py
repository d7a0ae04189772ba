"""The synthetic segmentation generator: shapes, masks that mean something, scanners, knobs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medfed.data import TaskKind, load_dataset
from medfed.errors import DataError
from medfed.math.metrics import dice


def _load(**options):  # type: ignore[no-untyped-def]
    return load_dataset("synthetic-segmentation", seed=1, options=options)


def test_slices_and_volumes_follow_the_label_convention() -> None:
    for options, spatial in (
        ({}, (32, 32)),
        ({"volume": True, "image_size": 16, "depth": 8}, (8, 16, 16)),
    ):
        ds = _load(**options)
        assert ds.spec.kind is TaskKind.SEGMENTATION and ds.spec.n_classes == 2
        assert ds.spec.input_shape == (1, *spatial) and ds.spec.output_shape == (2, *spatial)
        assert ds.spec.is_volume == (len(spatial) == 3)
        for site in ds.sites:
            assert site.x_train.dtype == np.float32 and site.x_train.shape[1:] == (1, *spatial)
            assert site.y_train.dtype == np.int64 and site.y_train.shape[1:] == spatial
            assert set(np.unique(site.y_train).tolist()) <= {0, 1}


def test_the_same_seed_gives_the_same_scans_and_another_seed_others() -> None:
    a, b, c = _load(), _load(), load_dataset("synthetic-segmentation", seed=2)
    assert np.array_equal(a.sites[0].x_train, b.sites[0].x_train)
    assert np.array_equal(a.sites[0].y_test, b.sites[0].y_test)
    assert not np.array_equal(a.sites[0].x_train, c.sites[0].x_train)


def test_the_mask_marks_brighter_tissue_that_intensity_alone_does_not_segment() -> None:
    ds = _load(scanner_shift=0.0)
    x = np.concatenate([s.x_train for s in ds.sites])[:, 0]
    y = np.concatenate([s.y_train for s in ds.sites]).astype(bool)
    has = y.reshape(len(y), -1).any(axis=1)
    assert 0.7 <= has.mean() <= 0.9  # tumour_rate 0.8
    inside, outside = x[y], x[~y]
    assert inside.mean() > outside.mean() + 0.2
    share = y[has].mean()
    assert 0.01 < share < 0.08


def test_with_scanner_shifts_no_one_intensity_threshold_segments_well() -> None:
    ds = _load()
    x = np.concatenate([s.x_test for s in ds.sites])[:, 0]
    y = np.concatenate([s.y_test for s in ds.sites])
    best = max(
        dice(labels=y, predicted=(x > t).astype(np.int64), n_classes=2) or 0.0
        for t in np.quantile(x, np.linspace(0.8, 0.999, 40))
    )
    assert best < 0.6  # chosen with hindsight on the test scans; the U-Net does better


def test_each_site_has_its_own_scanner_unless_told_otherwise() -> None:
    def site_means(ds):  # type: ignore[no-untyped-def]
        return np.array([s.x_train.mean() for s in ds.sites])

    shifted = site_means(_load(scanner_shift=1.5))
    same = site_means(_load(scanner_shift=0.0))
    assert np.ptp(shifted) > 3 * np.ptp(same)
    assert all("gain" in s.description for s in _load().sites)


def test_sites_sizes_and_test_sets() -> None:
    ds = load_dataset("synthetic-segmentation", num_sites=5, seed=0)
    assert len(ds.sites) == 5
    assert sum(s.num_train + s.num_test for s in ds.sites) == 5 * 80
    for s in ds.sites:
        n = s.num_train + s.num_test
        assert s.num_test == round(n * 0.25)
        tumours = s.y_test.reshape(s.num_test, -1).any(axis=1)
        assert tumours.any() and not tumours.all()  # stratified by tumour presence


def test_the_defaults_are_quick() -> None:
    _load()
    start = time.perf_counter()
    _load()
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"image_size": 8}, "image_size must be between 16 and 64"),
        ({"depth": 4, "volume": True}, "depth must be between 8 and 32"),
        ({"tumour_rate": 0.0}, "tumour_rate"),
        ({"num_images": 10}, "num_images must be between"),
        ({"num_images": 20000, "volume": True, "image_size": 64, "depth": 32}, "voxels"),
        ({"scanner_shift": -1}, "scanner_shift"),
    ],
)
def test_bad_options_are_explained(options: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        load_dataset("synthetic-segmentation", options=options)
