"""Secure aggregation and client-level DP through the round driver, with real cryptography."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import medfed
from medfed.config import RunConfig, config_from_dict
from medfed.errors import RoundFailed
from medfed.orchestration.backends.inprocess import InProcessBackend
from medfed.orchestration.driver import RoundDriver
from medfed.orchestration.protection import SiteProtection, protection_for
from medfed.orchestration.secure_round import SecureAggregation
from medfed.privacy.accounting import epsilon
from medfed.privacy.config import PrivacyConfig
from medfed.records import Instruction
from medfed.secagg import ed25519_verifier
from medfed.site.runtime import SiteRuntime
from medfed.site.secure_aggregation import SecureAggregationSite
from medfed.strategies import FedAvg
from tests.helpers import ShiftApp, model


class _DiesAt(SecureAggregationSite):
    """A site whose process dies when the protocol reaches ``stage`` (fault injection)."""

    stage = ""

    def handle(self, instruction: Instruction) -> tuple[dict[str, object], object]:
        assert instruction.message is not None
        if instruction.message.get("type") == self.stage:
            raise ConnectionError("the site went away")
        return super().handle(instruction)  # type: ignore[return-value]


@dataclass
class SecureShiftSites:
    n: int
    protection: SiteProtection
    dies: dict[str, str] | None = None

    @property
    def site_names(self) -> list[str]:
        return [f"site-{i}" for i in range(self.n)]

    def make(self, name: str) -> SiteRuntime:
        i = self.site_names.index(name)
        app = ShiftApp(shift=0.1 * i, num_examples=10 * (i + 1))
        secure = self.protection.secure_site(name)
        stage = (self.dies or {}).get(name)
        if stage is not None and secure is not None:
            secure = _DiesAt(secure.identity)
            secure.stage = stage
        return SiteRuntime(name, app, secure=secure)


def _secure(n: int, *, dies: dict[str, str] | None = None, bound: float = 4.0):
    run = RunConfig(rounds=1, privacy=PrivacyConfig(secagg_bound=bound))
    _, secure, site = protection_for(run, sites=[f"site-{i}" for i in range(n)])
    assert secure is not None and site is not None
    return secure, InProcessBackend(SecureShiftSites(n, site, dies))


def _plain(n: int) -> InProcessBackend:
    from tests.helpers import ShiftSites

    return InProcessBackend(ShiftSites(n))


def test_the_secure_sum_equals_plain_fedavg_within_the_quantisation_bound() -> None:
    secure, backend = _secure(6)
    plain = RoundDriver(strategy=FedAvg(), backend=_plain(6), seed=3).train_round(1, model())
    # ShiftSites shifts by i, ours by 0.1·i: compare against the same sites
    masked = RoundDriver(strategy=FedAvg(), backend=backend, seed=3, secure=secure).train_round(
        1, model()
    )
    assert masked.trained == tuple(f"site-{i}" for i in range(6))
    weights = np.arange(1, 7) * 10.0
    expected = float(np.sum(weights * 0.1 * np.arange(6)) / weights.sum())
    for name, value in masked.params.items():
        assert value.shape == plain.params[name].shape
        np.testing.assert_allclose(value, expected, atol=2e-3)


def test_sites_that_drop_at_any_stage_are_left_out_and_the_round_completes() -> None:
    secure, backend = _secure(
        8,
        dies={
            "site-1": "share_keys_request",
            "site-4": "masked_input_request",
            "site-6": "unmask_request",
        },
    )
    result = RoundDriver(
        strategy=FedAvg(min_sites=4), backend=backend, seed=0, secure=secure
    ).train_round(1, model())
    assert "site-1" not in result.trained and "site-4" not in result.trained
    assert "site-6" in result.trained  # its masked input is in the sum; its masks were rebuilt
    assert {"site-1", "site-4", "site-6"} <= set(result.failures)
    survivors = [i for i in range(8) if i not in (1, 4)]
    weights = np.array([10.0 * (i + 1) for i in survivors])
    expected = float(np.sum(weights * 0.1 * np.array(survivors)) / weights.sum())
    np.testing.assert_allclose(result.params["w"], expected, atol=2e-3)


def test_too_many_dropouts_fail_the_round_closed() -> None:
    dies = {f"site-{i}": "masked_input_request" for i in range(4)}
    secure, backend = _secure(6, dies=dies)
    with pytest.raises(RoundFailed):
        RoundDriver(strategy=FedAvg(), backend=backend, seed=0, secure=secure).train_round(
            1, model()
        )


def test_one_site_cannot_be_aggregated_securely() -> None:
    secure, backend = _secure(1)
    with pytest.raises(RoundFailed, match="at least 2 sites"):
        RoundDriver(strategy=FedAvg(), backend=backend, seed=0, secure=secure).train_round(
            1, model()
        )


def test_a_forged_identity_key_is_refused_by_the_coordinator() -> None:
    _, backend = _secure(4)
    impostor = SiteProtection(
        config=PrivacyConfig(), rounds=1, keys={f"site-{i}": bytes([i + 1]) * 32 for i in range(4)}
    )
    forged = SecureAggregation(bound=4.0, verify_identity=ed25519_verifier(impostor.public_keys()))
    with pytest.raises(RoundFailed):
        RoundDriver(strategy=FedAvg(), backend=backend, seed=0, secure=forged).train_round(
            1, model()
        )


def _run(privacy: dict, **extra):
    raw = {
        "rounds": 4,
        "seed": 0,
        "data": {"name": "breast-cancer", "sites": 4},
        "privacy": privacy,
        **extra,
    }
    return medfed.simulate(config_from_dict(raw))


def test_secure_aggregation_trains_the_same_model_as_plain_fedavg_on_real_data() -> None:
    plain = _run({"secure_aggregation": False}).params
    secure = _run({"secure_aggregation": True, "secagg_bound": 2.0}).params
    for name, value in plain.items():
        np.testing.assert_allclose(secure[name], value, atol=1e-4)


@pytest.mark.slow
def test_secure_aggregation_on_the_process_backend_matches_in_process() -> None:
    privacy = {"secure_aggregation": True, "secagg_bound": 2.0}
    a = _run(privacy).params
    b = _run(privacy, backend={"kind": "process", "workers": 2}).params
    assert a == b  # masks cancel exactly and the encoding is deterministic


def test_client_dp_reports_the_accountants_epsilon_after_every_round() -> None:
    result = _run({"dp": "client", "noise_multiplier": 0.8, "delta": 1e-5})
    eps = [r.privacy["epsilon"] for r in result.history]
    assert eps == sorted(eps) and eps[0] > 0
    for r, value in enumerate(eps, start=1):
        want = epsilon(noise_multiplier=0.8, sample_rate=1.0, rounds=r, delta=1e-5)
        assert value == pytest.approx(want, rel=1e-9)
    assert all(r.privacy["noise_multiplier"] == 0.8 for r in result.history)
    reports = result.history[-1].reports
    assert reports and all(r.saturated is not None for r in reports.values())


def test_a_target_epsilon_is_met_and_not_exceeded() -> None:
    result = _run({"dp": "client", "target_epsilon": 8.0, "delta": 1e-5})
    assert result.history[-1].privacy["epsilon"] <= 8.0 + 1e-9
    assert result.history[-1].privacy["epsilon"] > 7.0
