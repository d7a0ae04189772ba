"""Synthetic scans: conventions, determinism, scanner and prevalence heterogeneity, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from medfed.data import TaskKind, load_dataset
from medfed.data.synthetic_imaging import MIN_PER_CLASS, ImagingOptions, generate_imaging
from medfed.errors import DataError


def _img(seed: int = 0, num_sites: int | None = None, **options: object):  # type: ignore[no-untyped-def]
    return load_dataset("synthetic-imaging", num_sites=num_sites, seed=seed, options=options)  # type: ignore[arg-type]


def _all(site):  # type: ignore[no-untyped-def]
    return np.concatenate([site.x_train, site.x_test]), np.concatenate([site.y_train, site.y_test])


@pytest.mark.parametrize("size", [28, 32])
def test_shapes_dtypes_and_labels(size: int) -> None:
    ds = _img(image_size=size, num_images=800)
    assert ds.spec.kind is TaskKind.BINARY and ds.spec.is_image
    assert ds.spec.input_shape == (1, size, size)
    total = 0
    for site in ds.sites:
        x, y = _all(site)
        assert x.dtype == np.float32 and x.shape[1:] == (1, size, size)
        assert np.isfinite(x).all()
        assert y.dtype == np.int64 and min(np.bincount(y, minlength=2)) >= MIN_PER_CLASS
        total += len(y)
    assert total == 800


def test_same_seed_same_scans_and_other_seed_other_scans() -> None:
    a, b, c = (
        _img(seed=5, num_images=400),
        _img(seed=5, num_images=400),
        _img(seed=6, num_images=400),
    )
    for sa, sb in zip(a.sites, b.sites, strict=True):
        assert np.array_equal(sa.x_train, sb.x_train) and np.array_equal(sa.y_train, sb.y_train)
    assert not np.array_equal(a.sites[0].x_train[:5], c.sites[0].x_train[:5])


def test_default_prevalence_is_equal_and_small_alpha_skews_it() -> None:
    equal = [_all(s)[1].mean() for s in _img().sites]
    assert np.allclose(equal, 0.5, atol=0.01)
    skewed = [_all(s)[1].mean() for s in _img(num_sites=10, alpha=0.3).sites]
    assert np.std(skewed) > 0.2


def test_scanners_differ_between_sites_only_when_asked() -> None:
    def site_stats(shift: float) -> np.ndarray:
        ds = _img(num_sites=6, num_images=1800, scanner_shift=shift)
        return np.array([[_all(s)[0].mean(), _all(s)[0].std()] for s in ds.sites])

    same, shifted = site_stats(0.0), site_stats(1.0)
    assert np.ptp(same[:, 0]) < 0.02 and np.ptp(same[:, 1]) < 0.02
    assert np.ptp(shifted[:, 0]) > 0.08, "gain, offset and gamma move the mean intensity"
    ds = _img(num_sites=3)
    assert len({s.description for s in ds.sites}) == 3, "each site names its own scanner"


def test_lesion_scans_differ_but_not_in_overall_brightness_alone() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    pooled = _img(num_images=3000, scanner_shift=0.0).pooled()
    brightness = pooled.x_test.mean(axis=(1, 2, 3))
    assert roc_auc_score(pooled.y_test, brightness) < 0.75, "not solved by mean intensity"
    flat_train = pooled.x_train.reshape(pooled.num_train, -1)
    model = LogisticRegression(C=0.1, max_iter=3000).fit(flat_train, pooled.y_train)
    auc = roc_auc_score(
        pooled.y_test, model.predict_proba(pooled.x_test.reshape(pooled.num_test, -1))[:, 1]
    )
    assert 0.6 < auc < 0.85, "a linear model on pixels finds some signal, not all of it"


def test_generation_is_fast() -> None:
    generate_imaging(seed=0, options=ImagingOptions(num_images=200))  # warm up
    start = time.perf_counter()
    generate_imaging(seed=1, options=ImagingOptions(num_images=3000))
    assert time.perf_counter() - start < 2.0


def _small_cnn_test_scores(seed: int) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    pooled = _img(seed=seed).pooled()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 1),
    )  # fmt: skip
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(pooled.x_train), torch.from_numpy(pooled.y_train).float()
    for _ in range(10):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            batch = order[i : i + 64]
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[batch])[:, 0], y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return pooled.y_test, model(torch.from_numpy(pooled.x_test))[:, 0].numpy()


@pytest.mark.slow
def test_a_small_cnn_learns_the_task() -> None:
    import torch
    from sklearn.metrics import roc_auc_score

    threads = torch.get_num_threads()
    # One thread: after scikit-learn's OpenMP pool has run in this process, torch's own
    # threads spin against it and the test takes ten times longer.
    torch.set_num_threads(1)
    try:
        y_test, scores = _small_cnn_test_scores(seed=1)
    finally:
        torch.set_num_threads(threads)
    assert roc_auc_score(y_test, scores) > 0.82  # 0.89 when written


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"image_size": 8}, "image_size must be between"),
        ({"prevalence": 1.0}, "prevalence must be between"),
        ({"alpha": 0.0}, "alpha must be positive"),
        ({"scanner_shift": -1}, "scanner_shift must be between"),
        ({"num_images": 10}, "num_images must be between"),
        ({"contrast": 2}, "no option 'contrast'"),
    ],
)
def test_bad_options_are_refused(options: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DataError, match=match):
        _img(**options)


def test_many_sites_get_a_default_size_that_fits() -> None:
    ds = _img(num_sites=100)
    assert len(ds.sites) == 100
    assert math.isinf(ImagingOptions().alpha)
