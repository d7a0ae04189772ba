"""The Cox loss against hand-computed values, a brute-force Breslow reference, and lifelines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from medfed.data.base import DataSpec, TaskKind
from medfed.site.losses import BinaryLogitLoss, CoxPHLoss, cox_ph_loss, loss_for


def breslow_reference(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """The Breslow partial likelihood written as its definition, one event at a time."""
    terms = []
    for i in np.flatnonzero(event):
        at_risk = time >= time[i]
        terms.append(risk[i] - math.log(np.exp(risk[at_risk]).sum()))
    return -sum(terms) / len(terms)


def test_hand_computed_example_with_a_tie() -> None:
    # times 1, 2, 2, 3 with events at 1 and at both 2s; the censored patient at 3.
    risk = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    time = torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
    event = torch.tensor([1, 1, 1, 0])
    e = math.exp
    everyone = e(0.5) + e(-1.0) + e(2.0) + e(0.0)
    from_two = e(-1.0) + e(2.0) + e(0.0)  # Breslow: both tied events share this risk set
    expected = (
        -((0.5 - math.log(everyone)) + (-1.0 - math.log(from_two)) + (2.0 - math.log(from_two))) / 3
    )
    assert float(cox_ph_loss(risk, time, event)) == pytest.approx(expected, rel=1e-12)


def test_one_event_two_at_risk_is_log_two() -> None:
    loss = cox_ph_loss(torch.zeros(2), torch.tensor([1.0, 2.0]), torch.tensor([1, 0]))
    assert float(loss) == pytest.approx(math.log(2))


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.floats(-5, 5),  # risk
            st.integers(0, 4),  # time: a small range, so ties are common
            st.booleans(),  # event
        ),
        min_size=1,
        max_size=25,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_the_definition_and_ignores_row_order(
    data: list[tuple[float, int, bool]], seed: int
) -> None:
    risk, time, event = (np.array(col) for col in zip(*data, strict=True))
    if not event.any():
        event[0] = True
    expected = breslow_reference(risk, time.astype(float), event)
    got = cox_ph_loss(
        torch.tensor(risk), torch.tensor(time, dtype=torch.float64), torch.tensor(event)
    )
    assert float(got) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    perm = np.random.default_rng(seed).permutation(len(risk))
    shuffled = cox_ph_loss(
        torch.tensor(risk[perm]),
        torch.tensor(time[perm], dtype=torch.float64),
        torch.tensor(event[perm]),
    )
    assert float(shuffled) == pytest.approx(float(got), rel=1e-12, abs=1e-12)


def test_large_scores_do_not_overflow() -> None:
    risk = torch.tensor([1000.0, -1000.0, 3.0], requires_grad=True)
    loss = cox_ph_loss(risk, torch.tensor([1.0, 2.0, 2.0]), torch.tensor([1, 1, 0]))
    loss.backward()
    assert loss.item() == pytest.approx((0.0 + 1003.0) / 2, rel=1e-5)
    assert risk.grad is not None and torch.isfinite(risk.grad).all()


def test_no_event_gives_a_zero_that_still_backpropagates() -> None:
    risk = torch.tensor([0.3, -0.2], requires_grad=True)
    loss = cox_ph_loss(risk, torch.tensor([1.0, 2.0]), torch.tensor([0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert risk.grad is not None and torch.equal(risk.grad, torch.zeros(2))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same length"):
        cox_ph_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3))


def test_coefficients_match_lifelines_on_rossi() -> None:
    lifelines = pytest.importorskip("lifelines")
    from lifelines.datasets import load_rossi

    df = load_rossi()
    # lifelines handles ties with Efron's method; with distinct times Efron and Breslow agree,
    # so break the weekly ties with a tiny jitter and compare tightly.
    df["week"] = df["week"] + np.random.default_rng(0).uniform(0, 0.01, len(df))
    reference = lifelines.CoxPHFitter().fit(df, "week", "arrest")
    covariates = [c for c in df.columns if c not in ("week", "arrest")]
    x = torch.tensor(df[covariates].to_numpy(), dtype=torch.float64)
    time = torch.tensor(df["week"].to_numpy())
    event = torch.tensor(df["arrest"].to_numpy())
    beta = torch.zeros(len(covariates), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [beta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = cox_ph_loss(x @ beta, time, event)
        loss.backward()
        return loss

    opt.step(closure)
    expected = reference.params_[covariates].to_numpy()
    np.testing.assert_allclose(beta.detach().numpy(), expected, atol=1e-5)
    n_events = int(event.sum())
    log_likelihood = -cox_ph_loss(x @ beta, time, event).item() * n_events
    assert log_likelihood == pytest.approx(reference.log_likelihood_, rel=1e-8)


def test_module_losses_follow_the_label_conventions() -> None:
    out = torch.tensor([[2.0], [-1.0]])
    y_binary = torch.tensor([1, 0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        out.reshape(-1), torch.tensor([1.0, 0.0])
    )
    assert torch.equal(BinaryLogitLoss()(out, y_binary), expected)
    y_surv = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    assert float(CoxPHLoss()(out, y_surv)) == pytest.approx(
        -(2.0 - math.log(math.exp(2.0) + math.exp(-1.0)))
    )
    assert isinstance(loss_for(DataSpec(TaskKind.BINARY, (3,))), BinaryLogitLoss)
    assert isinstance(loss_for(DataSpec(TaskKind.MULTICLASS, (3,), 4)), torch.nn.CrossEntropyLoss)
    assert isinstance(loss_for(DataSpec(TaskKind.SURVIVAL, (3,))), CoxPHLoss)
