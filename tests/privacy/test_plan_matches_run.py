"""A run configured from `medfed privacy plan` ends at the plan's ε.

The plan and the run must share the sampling assumption (sites drawn as a fixed number per
round, no amplification by sampling: q = 1) and the accountant's code path
(:func:`medfed.privacy.server.client_accountant`). The issue's example: a target ε of 4 at
δ = 1e-5 over 50 rounds, 5 of 10 sites per round; the plan once proposed σ = 4.2561 by
assuming q = 0.5, and a run with that σ spent ε ≈ 8.57.
"""

from __future__ import annotations

import warnings

import dp_accounting
import pytest
from hypothesis import given, settings, strategies as st

import medfed
from medfed.errors import ConfigError
from medfed.privacy.config import PrivacyConfig
from medfed.privacy.plan import PrivacyPlan, make_plan
from medfed.privacy.server import SITE_SAMPLE_RATE, ServerPrivacy, client_accountant

TARGET, DELTA, ROUNDS, SITES, PER_ROUND = 4.0, 1e-5, 50, 10, 5
OLD_SIGMA = 4.2561  # what the plan proposed before, assuming q = PER_ROUND / SITES


def issue_plan() -> PrivacyPlan:
    return make_plan(
        target_epsilon=TARGET,
        delta=DELTA,
        rounds=ROUNDS,
        min_sites=PER_ROUND,
        sites_per_round=PER_ROUND,
    )


def rdp_epsilon(sigma: float, rounds: int, delta: float = DELTA) -> float:
    """ε of ``rounds`` Gaussian mechanisms on all sites (q = 1), by dp_accounting directly."""
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(sigma), rounds)
    return float(acc.get_epsilon(delta))


def quiet_plan(*, noise_multiplier: float, rounds: int) -> PrivacyPlan:
    """A plan without its weak-ε warning (pytest turns warnings into errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make_plan(noise_multiplier=noise_multiplier, delta=DELTA, rounds=rounds)


def simulate(*, secure: bool, **privacy: float) -> medfed.SimulationResult:
    """The issue's federation, simulated: 10 small synthetic-EHR sites, 5 drawn per round."""
    overrides: dict[str, object] = {
        "data.name": "synthetic-ehr",
        "data.sites": SITES,
        "data.options": {"num_patients": 1000},
        "strategy.fraction": PER_ROUND / SITES,
        "strategy.min_sites": PER_ROUND,
        "privacy.dp": "client",
        "privacy.delta": DELTA,
        "privacy.secure_aggregation": secure,
        "evaluation.every": 0,
    }
    overrides.update({f"privacy.{k}": v for k, v in privacy.items()})
    config = medfed.RunConfig(rounds=ROUNDS, seed=7).with_overrides(**overrides)
    return medfed.simulate(config)


@pytest.mark.slow
@pytest.mark.integration
def test_a_run_with_the_planned_sigma_ends_at_the_planned_epsilon() -> None:
    plan = issue_plan()
    result = simulate(secure=True, noise_multiplier=plan.noise_multiplier)
    assert len(result.history) == ROUNDS
    assert all(len(r.trained) == PER_ROUND for r in result.history)  # a fixed number per round
    reported = [r.privacy["epsilon"] for r in result.history]
    assert reported[-1] == pytest.approx(plan.epsilon, rel=1e-9)
    assert reported[-1] <= TARGET
    for rounds, eps in plan.milestones:
        assert reported[rounds - 1] == pytest.approx(eps, rel=1e-9), rounds
    assert result.history[-1].privacy["noise_multiplier"] == plan.noise_multiplier


@pytest.mark.slow
@pytest.mark.integration
def test_a_run_with_the_target_ends_at_or_just_below_it_with_the_plans_sigma() -> None:
    plan = issue_plan()
    result = simulate(secure=False, target_epsilon=TARGET)
    last = result.history[-1].privacy
    assert last["noise_multiplier"] == plan.noise_multiplier
    assert TARGET - 1e-3 <= last["epsilon"] <= TARGET
    assert last["epsilon"] == pytest.approx(plan.epsilon, rel=1e-9)


def test_the_issues_plan_spends_at_most_the_target_under_the_runs_accountant() -> None:
    plan = issue_plan()
    assert plan.sample_rate == SITE_SAMPLE_RATE == 1.0
    independent = rdp_epsilon(plan.noise_multiplier, ROUNDS)
    assert independent <= TARGET
    assert independent == pytest.approx(TARGET, abs=1e-3)  # not more noise than needed
    assert plan.epsilon == pytest.approx(independent, rel=1e-9)
    assert plan.noise_multiplier == pytest.approx(8.1852, abs=1e-4)
    # the old σ, accounted as a run accounts it, spent twice the target
    assert rdp_epsilon(OLD_SIGMA, ROUNDS) == pytest.approx(8.57, abs=0.01)


def test_the_coordinator_and_the_plan_share_one_accountant() -> None:
    plan = issue_plan()
    config = PrivacyConfig(dp="client", target_epsilon=TARGET, delta=DELTA)
    server = ServerPrivacy(config, rounds=ROUNDS, expected_sites=PER_ROUND, min_sites=PER_ROUND)
    assert server.noise_multiplier == plan.noise_multiplier
    assert server.accountant.sample_rate == 1.0
    figures = [server.finish_round(centred_bits_sum=None) for _ in range(ROUNDS)]
    assert figures[-1]["epsilon"] == plan.epsilon
    assert client_accountant(config, rounds=ROUNDS).noise_multiplier == plan.noise_multiplier


def test_the_coordinator_refuses_to_claim_amplification() -> None:
    config = PrivacyConfig(dp="client", noise_multiplier=2.0)
    with pytest.raises(ValueError, match="no amplification by sampling"):
        ServerPrivacy(config, rounds=5, sample_rate=0.5, expected_sites=5, min_sites=5)
    assert ServerPrivacy(config, rounds=5, sample_rate=1.0, expected_sites=5, min_sites=5)


@pytest.mark.parametrize(
    ("config", "rounds", "needle"),
    [
        (PrivacyConfig(dp="sample"), 5, "privacy.dp = 'client'"),
        (PrivacyConfig(dp="client"), 0, "rounds must be at least 1"),
    ],
)
def test_client_accountant_refuses_degenerate_input(
    config: PrivacyConfig, rounds: int, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        client_accountant(config, rounds=rounds)


def test_an_impossible_target_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="raise the target epsilon or lower the rounds"):
        make_plan(target_epsilon=1e-6, delta=DELTA, rounds=ROUNDS)


def test_a_weak_plan_warns() -> None:
    with pytest.warns(UserWarning, match="weak guarantee"):
        make_plan(noise_multiplier=0.8, delta=DELTA, rounds=ROUNDS)


@settings(max_examples=40, deadline=None)
@given(
    sigma=st.floats(min_value=0.3, max_value=30.0),
    rounds=st.integers(min_value=1, max_value=400),
    more=st.integers(min_value=1, max_value=400),
)
def test_the_plans_epsilon_grows_with_the_rounds(sigma: float, rounds: int, more: int) -> None:
    short = quiet_plan(noise_multiplier=sigma, rounds=rounds)
    long = quiet_plan(noise_multiplier=sigma, rounds=rounds + more)
    assert short.epsilon <= long.epsilon
    assert [eps for _, eps in long.milestones] == sorted(eps for _, eps in long.milestones)
    assert short.epsilon == pytest.approx(rdp_epsilon(sigma, rounds), rel=1e-9)


@pytest.mark.parametrize("rounds", [1, 10, 50, 200])
def test_for_a_target_more_rounds_need_more_noise(rounds: int) -> None:
    fewer = make_plan(target_epsilon=TARGET, delta=DELTA, rounds=rounds)
    more = make_plan(target_epsilon=TARGET, delta=DELTA, rounds=rounds * 2)
    assert fewer.noise_multiplier < more.noise_multiplier
    assert fewer.epsilon <= TARGET and more.epsilon <= TARGET
