"""Round settings and site reports: one typed, versioned definition each (medfed.messages)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from medfed.errors import SerializationError
from medfed.messages import (
    MESSAGE_VERSION,
    MessageVersionError,
    RoundSettings,
    SecureSettings,
    SiteReport,
    report_from_json,
    report_to_json,
    settings_from_json,
    settings_to_json,
)
from medfed.records import Instruction, Operation, Params
from medfed.serde import instruction_from_wire, instruction_to_wire


def test_settings_and_reports_round_trip_through_json() -> None:
    settings = RoundSettings(proximal_mu=0.01, clip_norm=1.5, secure=SecureSettings("uniform", 4.0))
    assert settings_from_json(json.loads(json.dumps(settings_to_json(settings)))) == settings
    report = SiteReport(epsilon=2.5, saturated=0)
    assert report_from_json(json.loads(json.dumps(report_to_json(report)))) == report
    assert settings_from_json(settings_to_json(RoundSettings())) == RoundSettings()


@pytest.mark.parametrize("version", [None, 0, MESSAGE_VERSION + 1, "1"])
def test_a_peer_speaking_another_version_is_refused_naming_both(version: Any) -> None:
    wire = settings_to_json(RoundSettings())
    wire["version"] = version
    with pytest.raises(MessageVersionError, match=rf"version {version!r}.*speaks version 1"):
        settings_from_json(wire)
    report = {**report_to_json(SiteReport()), "version": version}
    with pytest.raises(MessageVersionError, match="site report"):
        report_from_json(report)


def test_an_old_instruction_without_settings_names_the_version_problem() -> None:
    header = instruction_to_wire(Instruction(Operation.TRAIN, 1, Params(), seed=0))
    del header["settings"]
    header["config"] = {"proximal_mu": 0.1}  # what medfed sent before messages were versioned
    with pytest.raises(SerializationError, match="round settings"):
        instruction_from_wire(header, Params())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("proximal_mu", -1.0),
        ("proximal_mu", True),
        ("clip_norm", 0.0),
        ("clip_norm", 10**400),
        ("secure", {"weights": "everyone", "bound": 1.0}),
        ("secure", {"weights": "examples", "bound": -1.0}),
        ("secure", {"weights": "examples", "bound": 1.0, "extra": 1}),
        ("task", {"opt": [1, 2]}),
        ("task", "not an object"),
        ("unknown_field", 1),
    ],
)
def test_bad_settings_from_a_peer_are_refused(field: str, value: Any) -> None:
    wire = {**settings_to_json(RoundSettings()), field: value}
    with pytest.raises(SerializationError):
        settings_from_json(wire)


@pytest.mark.parametrize(
    ("field", "value"),
    [("epsilon", "much"), ("epsilon", float("nan")), ("saturated", -1), ("local_steps", 1.5)],
)
def test_bad_reports_from_a_peer_are_refused(field: str, value: Any) -> None:
    with pytest.raises(SerializationError):
        report_from_json({**report_to_json(SiteReport()), field: value})


def test_no_medfed_module_shares_a_string_key_for_round_settings() -> None:
    """The keys that used to travel in Instruction.config are gone from the code."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "medfed"
    old = ('"dp_clip_bit"', '"dp_clip_norm"', '"secagg_weight"', "PROXIMAL_MU")
    hits = [
        f"{p.relative_to(root)}: {key}"
        for p in root.rglob("*.py")
        for key in old
        if key in p.read_text(encoding="utf-8")
    ]
    assert hits == []


def test_harmonisation_travels_only_when_set_and_is_checked() -> None:
    from medfed.messages import HarmoniseSettings

    assert "harmonise" not in settings_to_json(RoundSettings())  # a peer of before reads it
    h = HarmoniseSettings("combat", (1.5, -2.0), (0.5, 3.0), min_count=12)
    wire = json.loads(json.dumps(settings_to_json(RoundSettings(harmonise=h))))
    assert settings_from_json(wire).harmonise == h
    for bad in (
        {"method": "zscore", "mean": [0.0], "sd": [1.0]},
        {"method": "standardise", "mean": [0.0, 1.0], "sd": [1.0]},
        {"method": "standardise", "mean": [0.0], "sd": [0.0]},
        {"method": "standardise", "mean": ["0"], "sd": [1.0]},
        {"method": "standardise", "mean": [0.0], "sd": [1.0], "extra": 1},
    ):
        with pytest.raises(SerializationError):
            settings_from_json({**wire, "harmonise": bad})
