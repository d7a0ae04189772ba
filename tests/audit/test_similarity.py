"""Similarity metrics and matching: what "reconstructed" means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfed.audit.similarity import (
    IMAGE_PSNR_THRESHOLD_DB,
    cosine_matrix,
    match_images,
    match_records,
    psnr,
    ssim,
)


def test_psnr_of_an_exact_copy_is_infinite_and_of_an_offset_is_known() -> None:
    ref = np.linspace(0.0, 1.0, 100).reshape(10, 10)
    assert psnr(reconstruction=ref, reference=ref) == math.inf
    # RMS error 0.1 of a range of 1: 20 dB exactly
    assert psnr(reconstruction=ref + 0.1, reference=ref) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(reconstruction=ref[:5], reference=ref)


def test_ssim_is_one_for_identical_images_and_drops_with_noise() -> None:
    rng = np.random.default_rng(0)
    ref = np.outer(np.hanning(28), np.hanning(28))[None]
    assert ssim(reconstruction=ref, reference=ref) == pytest.approx(1.0)
    noisy = ref + rng.normal(0, 0.2, ref.shape)
    assert ssim(reconstruction=noisy, reference=ref) < 0.5
    assert ssim(reconstruction=np.full_like(ref, np.nan), reference=ref) == 0.0


def test_cosine_matrix_handles_zero_vectors() -> None:
    cos = cosine_matrix(references=[[1.0, 0.0], [0.0, 0.0]], candidates=[[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(cos, [[1.0, 0.0], [0.0, 0.0]])


def test_match_records_counts_exact_recoveries() -> None:
    refs = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    candidates = np.array([[5.0, 5.0, 5.0], [1.0, 2.0, 3.05], [np.inf, 0.0, 0.0]])
    sim = match_records(references=refs, candidates=candidates)
    assert sim.reconstructed_records == (True, False)
    assert sim.leaks and sim.reconstructed == 1
    assert sim.secondary[0] < 0.02


def test_a_mixture_pointing_the_right_way_is_not_a_reconstruction() -> None:
    """Cosine alone is fooled by correlated features: the values must match too."""
    ref = np.array([[1.0, 1.0, 1.1]])
    sim = match_records(references=ref, candidates=4.0 * ref)
    assert sim.per_record[0] == pytest.approx(1.0)
    assert sim.secondary[0] == pytest.approx(3.0)
    assert not sim.leaks


def test_no_candidates_recovers_nothing() -> None:
    sim = match_records(references=np.ones((3, 4)), candidates=np.zeros((0, 4)))
    assert sim.per_record == (0.0, 0.0, 0.0) and not sim.leaks


def test_match_images_finds_each_images_best_candidate() -> None:
    rng = np.random.default_rng(1)
    refs = rng.random((2, 1, 16, 16))
    candidates = np.stack([refs[1] + 0.01, rng.random((1, 16, 16))])
    sim = match_images(references=refs, candidates=candidates)
    assert sim.per_record[1] > 30 and sim.per_record[0] < IMAGE_PSNR_THRESHOLD_DB
    assert sim.reconstructed_records == (False, True)
    assert sim.secondary[1] > 0.95


def test_docstring_examples_run() -> None:
    import doctest

    import medfed.audit.similarity as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
