"""Membership inference (loss threshold) on real data, without and with DP-SGD (Opacus)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfed.audit.membership import (
    MembershipConfig,
    auroc_interval,
    loss_threshold_auroc,
    run_membership_audit,
)
from medfed.audit.report import MembershipReport, Verdict
from medfed.errors import ConfigError


@pytest.fixture(scope="module")
def report() -> MembershipReport:
    """The default audit: about 5 s on one core (two models, 50 epochs each)."""
    steps: list[str] = []
    result = run_membership_audit(MembershipConfig(), progress=steps.append)
    assert steps == ["training without DP", "training with DP-SGD"]
    return result


@pytest.mark.slow
def test_an_overfitted_model_leaks_membership(report: MembershipReport) -> None:
    plain = report.without_dp
    assert plain.member_loss < 0.1 < plain.nonmember_loss  # it memorised its training set
    assert plain.auroc > 0.55 and plain.auroc_low > 0.5
    assert plain.leaks and plain.epsilon is None


@pytest.mark.slow
def test_dp_sgd_brings_the_attack_back_to_chance(report: MembershipReport) -> None:
    private = report.with_dp
    assert private.auroc < 0.55 and private.auroc < report.without_dp.auroc
    assert abs(private.auroc - 0.5) < abs(report.without_dp.auroc - 0.5)
    assert private.epsilon is not None and 1 < private.epsilon < 20
    assert private.delta == 1e-5
    assert not private.leaks
    # the DP model still learned something: it ranks held-out patients better than chance
    assert private.test_auroc is not None and private.test_auroc > 0.52
    assert report.verdict is Verdict.PASS


def test_loss_threshold_auroc() -> None:
    assert loss_threshold_auroc(member_loss=[0.0, 0.1], nonmember_loss=[1.0, 2.0]) == 1.0
    assert loss_threshold_auroc(member_loss=[1.0, 1.0], nonmember_loss=[1.0]) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        loss_threshold_auroc(member_loss=[], nonmember_loss=[1.0])


def test_auroc_interval_narrows_with_more_records() -> None:
    wide = auroc_interval(area=0.6, positives=50, negatives=50)
    narrow = auroc_interval(area=0.6, positives=5000, negatives=5000)
    assert wide[0] < narrow[0] < 0.6 < narrow[1] < wide[1]
    assert all(0 <= v <= 1 for v in auroc_interval(area=1.0, positives=3, negatives=3))
    assert not any(math.isnan(v) for v in wide)
    assert np.isclose(sum(narrow) / 2, 0.6)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"data": "lung"}, "--data"),
        ({"members": 5}, "--members"),
        ({"epochs": 0}, "--epochs"),
        ({"noise_multiplier": 0.0}, "--noise-multiplier"),
        ({"delta": 1.0}, "delta"),
    ],
)
def test_bad_settings_are_one_sentence_errors(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        MembershipConfig(**changes)  # type: ignore[arg-type]
