"""PrivacyConfig: defaults, one-sentence errors, TOML round trip."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest
import tomli_w

from medfed.errors import ConfigError
from medfed.privacy.accounting import epsilon
from medfed.privacy.config import PrivacyConfig


def test_defaults_are_off_with_one_unit_of_noise() -> None:
    cfg = PrivacyConfig()
    assert cfg.dp == "none" and not cfg.enabled
    assert cfg.noise_multiplier == 1.0 and cfg.target_epsilon is None
    assert cfg.clip_norm == 1.0 and cfg.delta == 1e-5 and cfg.secure_aggregation


def test_a_target_epsilon_leaves_the_noise_to_calibration() -> None:
    cfg = PrivacyConfig(dp="client", target_epsilon=4.0)
    assert cfg.noise_multiplier is None
    sigma = cfg.resolve_noise(rounds=50, sample_rate=0.5)
    assert epsilon(noise_multiplier=sigma, sample_rate=0.5, rounds=50, delta=1e-5) <= 4.0
    assert PrivacyConfig(noise_multiplier=2.0).resolve_noise(rounds=9, sample_rate=1.0) == 2.0


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"dp": "central"}, "privacy.dp must be 'none', 'client' or 'sample'"),
        ({"noise_multiplier": 1.0, "target_epsilon": 3.0}, "not both"),
        ({"clip_norm": 0}, "privacy.clip_norm"),
        ({"noise_multiplier": -1}, "privacy.noise_multiplier"),
        ({"target_epsilon": 0}, "privacy.target_epsilon"),
        ({"delta": 1}, "privacy.delta"),
        ({"target_quantile": 1.5}, "privacy.target_quantile"),
        ({"clip_learning_rate": 0}, "privacy.clip_learning_rate"),
        ({"dp": "sample", "adaptive_clip": True}, "dp = 'client' only"),
        ({"accountant": "moments"}, "privacy.accountant"),
        ({"clip_nrom": 1.0}, "did you mean 'clip_norm'"),
        ({"clip_norm": "big"}, "privacy.clip_norm must be a number"),
        ({"secure_aggregation": 1}, "privacy.secure_aggregation must be true or false"),
    ],
)
def test_mistakes_are_one_sentence_config_errors(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        PrivacyConfig.from_mapping(values)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "cfg",
    [
        PrivacyConfig(),
        PrivacyConfig(dp="client", target_epsilon=3, adaptive_clip=True, target_quantile=0.7),
        PrivacyConfig(dp="sample", noise_multiplier=1.3, clip_norm=0.5, accountant="pld"),
    ],
)
def test_toml_round_trip(cfg: PrivacyConfig) -> None:
    text = tomli_w.dumps({"privacy": cfg.to_mapping()})
    back = PrivacyConfig.from_mapping(tomllib.loads(text)["privacy"])
    assert back == cfg


def test_integers_in_toml_are_accepted_as_numbers() -> None:
    cfg = PrivacyConfig.from_mapping({"dp": "client", "clip_norm": 2, "target_epsilon": 8})
    assert cfg.clip_norm == 2.0 and isinstance(cfg.clip_norm, float)


def test_a_target_set_later_replaces_the_default_noise_only() -> None:
    cfg = replace(PrivacyConfig(dp="client"), target_epsilon=2.0)
    assert cfg.noise_multiplier is None and cfg.target_epsilon == 2.0
    explicit = PrivacyConfig(dp="client", noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="not both"):
        replace(explicit, target_epsilon=2.0)
    assert PrivacyConfig().to_mapping()["noise_multiplier"] == 1.0
    assert type(PrivacyConfig().to_mapping()["noise_multiplier"]) is float
