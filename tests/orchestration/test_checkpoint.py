"""A round checkpoint carries the strategy's state and the coordinator's privacy state.

The model of a DP run cannot repeat bit for bit (each site's noise comes from OS entropy, by
design: the coordinator must not be able to replay it), so for DP what is checked is that a
restored driver continues with exactly the clip, moments and ε it had; the bit-for-bit model
check of a resumed run is in tests/strategies/test_fedopt.py and, over a real coordinator
killed with SIGKILL, in tests/federation/test_robustness.py.
"""

from __future__ import annotations

import pytest

from medfed.config import RunConfig, StrategyConfig
from medfed.errors import SerializationError
from medfed.orchestration.checkpoint import (
    RoundCheckpoint,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
)
from medfed.orchestration.driver import RoundDriver
from medfed.orchestration.simulation import Simulation, make_backend
from medfed.privacy.config import PrivacyConfig
from medfed.serde import params_to_bytes
from medfed.strategies import StrategyState

CONFIG = RunConfig(
    rounds=4,
    seed=1,
    strategy=StrategyConfig(name="fedadam", min_sites=3),
    privacy=PrivacyConfig(
        dp="client",
        noise_multiplier=0.5,
        clip_norm=0.5,
        adaptive_clip=True,
        target_quantile=0.2,
        clip_learning_rate=0.5,
        secure_aggregation=False,
    ),
).with_overrides(**{"data.sites": 3})


def _driver(sim: Simulation) -> RoundDriver:
    return sim.driver(make_backend(CONFIG, sim.factory))


def test_a_restored_driver_continues_with_the_clip_moments_and_epsilon_it_had() -> None:
    sim = Simulation(CONFIG)
    d1 = _driver(sim)
    params = sim.initial
    results = []
    for r in (1, 2):
        results.append(d1.run_round(r, params))
        params = results[-1].params
    after = results[-1]
    assert sim.server_privacy is not None
    clip_after = sim.server_privacy.clip
    assert clip_after != CONFIG.privacy.clip_norm  # the clip moved
    assert after.privacy_state == {"clip_norm": clip_after}
    saved = checkpoint_to_bytes(after.checkpoint)

    again = Simulation(CONFIG)  # a restarted coordinator
    d2 = _driver(again)
    d2.restore(checkpoint_from_bytes(saved), rounds_done=2)
    assert again.server_privacy is not None
    assert again.server_privacy.clip == clip_after
    assert again.server_privacy.accountant.epsilon == pytest.approx(
        sim.server_privacy.accountant.epsilon, rel=1e-12
    )
    assert d2.strategy_state == after.strategy_state
    third = d2.run_round(3, params)
    assert third.privacy["clip_norm"] == clip_after  # round 3 used the restored clip
    assert third.strategy_state.values["rounds"] == 3


def test_a_checkpoint_of_another_round_or_kind_is_refused() -> None:
    sim = Simulation(CONFIG)
    d = _driver(sim)
    with pytest.raises(ValueError, match="round 5"):
        d.restore(RoundCheckpoint(5, StrategyState()), rounds_done=2)
    with pytest.raises(SerializationError, match="not a round checkpoint"):
        checkpoint_from_bytes(params_to_bytes(sim.initial))


def test_a_checkpoint_keeps_the_harmonisation_the_sites_were_sent() -> None:
    from medfed.messages import HarmoniseSettings

    h = HarmoniseSettings("standardise", (1.0, 2.0), (3.0, 4.0))
    again = checkpoint_from_bytes(checkpoint_to_bytes(RoundCheckpoint(3, harmonise=h)))
    assert again.harmonise == h and again.round == 3
    assert checkpoint_from_bytes(checkpoint_to_bytes(RoundCheckpoint(1))).harmonise is None
