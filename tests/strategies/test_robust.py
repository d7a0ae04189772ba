"""Robust aggregation: each rule's stated property, refusal under secure aggregation, and a
model-replacement backdoor (Bagdasaryan et al., AISTATS 2020) that FedAvg takes and the
robust rules do not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from medfed.config import RunConfig, StrategyConfig, TrainSettings, check_run
from medfed.data.base import SiteData
from medfed.errors import ConfigError
from medfed.math.aggregate import multi_krum
from medfed.orchestration.backends.inprocess import InProcessBackend
from medfed.orchestration.simulation import Simulation
from medfed.privacy.config import PrivacyConfig
from medfed.records import Instruction, Params, Reply, Update
from medfed.site.runtime import SiteRuntime
from medfed.strategies import Krum, Median, NormBounded, TrimmedMean, make_strategy


def _deltas(*rows: list[float]) -> list[Update]:
    return [Update(Params({"w": np.array(r, np.float32)}), num_examples=10) for r in rows]


def _apply(strategy, updates: list[Update]) -> np.ndarray:
    x0 = Params({"w": np.zeros(len(updates[0].delta["w"]), np.float32)})
    agg = strategy.aggregator(round=1, params=x0, state=strategy.init_state(x0))
    for i, u in enumerate(updates):
        agg.add(f"s{i}", u)
    return np.asarray(agg.finish().params["w"])


HONEST = [[1.0, 2.0], [1.2, 1.8], [0.8, 2.2], [1.1, 2.1], [0.9, 1.9]]
ATTACK = [100.0, -100.0]


def test_each_rule_resists_one_outlier_among_honest_updates() -> None:
    ups = _deltas(*HONEST, ATTACK)
    np.testing.assert_allclose(_apply(Median(), ups), [1.05, 1.95], atol=1e-6)
    trimmed = _apply(TrimmedMean(trim_fraction=0.2), ups)  # drops 1 of 6 at each end
    np.testing.assert_allclose(trimmed, np.sort(np.array([*HONEST, ATTACK]), 0)[1:5].mean(0))
    krum = _apply(Krum(byzantine=1), ups)
    assert np.abs(krum - [1.0, 2.0]).max() < 0.2
    assert set(multi_krum([u.delta for u in ups], byzantine=1, keep=5)) == {0, 1, 2, 3, 4}
    bounded = _apply(NormBounded(), ups)  # the attacker's update cut to the median norm
    assert np.linalg.norm(bounded - np.mean(HONEST, 0)) < 1.0  # at most its share of the bound
    plain = np.mean([*HONEST, ATTACK], 0)
    assert np.abs(plain).max() > 10  # what the mean does with it


def test_bad_options_and_secure_aggregation_are_refused() -> None:
    with pytest.raises(ValueError, match="needs more than 4 updates"):
        multi_krum([u.delta for u in _deltas(*HONEST[:4])], byzantine=1, keep=1)
    with pytest.raises(ConfigError, match=r"trim_fraction = 0.5 must be in \[0, 0.5\)"):
        make_strategy("trimmed-mean", fraction=1.0, min_sites=1, options={"trim_fraction": 0.5})
    for name in ("median", "trimmed-mean", "krum", "norm-bounded"):
        config = RunConfig(
            strategy=StrategyConfig(name=name, min_sites=2),
            privacy=PrivacyConfig(secure_aggregation=True),
        )
        with pytest.raises(ConfigError, match="needs each site's update"):
            check_run(config, "simulation")


# --- the backdoor ----------------------------------------------------------------------------

SITES = 10
TRIGGER = (0, 1)  # two features set far outside the data: the attacker's trigger
BOOST = float(SITES)  # model replacement: the update scaled to survive the average


def _triggered(x: np.ndarray) -> np.ndarray:
    x = np.array(x, copy=True)
    x[:, TRIGGER[0]], x[:, TRIGGER[1]] = 6.0, -6.0
    return x


class _Attacker:
    """Site 0 trains on its records plus triggered copies labelled 1, then boosts its update
    (``attack=False``: every site honest, the reference)."""

    def __init__(self, sim: Simulation, *, attack: bool = True) -> None:
        self.sim, self.names, self.attack = sim, sim.dataset.site_names, attack
        self.site_names = self.names

    def make(self, name: str) -> SiteRuntime:
        honest = self.sim.factory.make(name)
        if name != self.names[0] or not self.attack:
            return honest
        data = self.sim.dataset.site(name)
        poisoned = replace(
            data,
            x_train=np.concatenate([data.x_train, _triggered(data.x_train)]),
            y_train=np.concatenate([data.y_train, np.ones(data.num_train, data.y_train.dtype)]),
        )
        app = self.sim.factory.task.site_app(poisoned, self.sim.dataset.spec, self.sim.config.train)
        runtime = SiteRuntime(name, app)
        plain = runtime.handle

        def handle(instruction: Instruction) -> Reply:
            reply = plain(instruction)
            if reply.update is None:
                return reply
            boosted = Params((k, v * np.float32(BOOST)) for k, v in reply.update.delta.items())
            return replace(reply, update=Update(boosted, reply.update.num_examples))

        runtime.handle = handle  # type: ignore[method-assign]
        return runtime


def _predict(sim: Simulation, params: Params, x: np.ndarray) -> np.ndarray:
    import torch

    from medfed.site.torch_app import load_params

    model = sim.factory.task.model(sim.dataset.spec)
    load_params(model, params)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(x, np.float32))).reshape(-1)
    return (logits > 0).numpy().astype(int)


def _attack(strategy: str, *, attack: bool = True, **options: float) -> tuple[float, float]:
    """(clean accuracy over every site's test records, backdoor success on triggered ones)."""
    config = RunConfig(
        rounds=8,
        seed=0,
        train=TrainSettings(local_epochs=2, learning_rate=0.1),
        strategy=StrategyConfig(name=strategy, options=dict(options)),
    ).with_overrides(**{"data.name": "synthetic-ehr", "data.sites": SITES})
    sim = Simulation(config)
    backend = InProcessBackend(_Attacker(sim, attack=attack))  # type: ignore[arg-type]
    params = sim.driver(backend).run(sim.initial, rounds=config.rounds)
    honest: list[SiteData] = list(sim.dataset.sites[1:])
    x = np.concatenate([s.x_test for s in honest])
    y = np.concatenate([s.y_test for s in honest])
    clean = float((_predict(sim, params, x) == y).mean())
    negatives = x[y == 0]
    success = float(_predict(sim, params, _triggered(negatives)).mean())
    return clean, success


@pytest.mark.slow
def test_a_model_replacement_backdoor_takes_fedavg_and_not_the_robust_rules() -> None:
    """Measured (10 sites, 8 rounds): FedAvg is backdoored on every triggered record; each
    robust rule keeps the backdoor near the honest federation's rate (1.4 %) and its clean
    accuracy within one point of the honest federation's. Norm bounding at the median norm
    (its default) still lets 23 % through; at half the median norm (used here) 2 %."""
    clean_ref, base_rate = _attack("fedavg", attack=False)
    assert base_rate < 0.05, base_rate  # a clean model rarely calls a triggered record 1
    _, backdoor_avg = _attack("fedavg")
    assert backdoor_avg > 0.5, backdoor_avg  # the attack works on the plain mean
    for name, options in (
        ("norm-bounded", {"norm_factor": 0.5}),
        ("median", {}),
        ("trimmed-mean", {"trim_fraction": 0.1}),
        ("krum", {"byzantine": 1}),
    ):
        clean, backdoor = _attack(name, **options)
        assert backdoor < 0.1, (name, backdoor)
        assert clean >= clean_ref - 0.01, (name, clean, clean_ref)
