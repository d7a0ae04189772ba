"""The leakage audit end to end: real scenario, real protections, real attacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfed.audit.leakage import LeakageConfig, run_leakage_audit
from medfed.audit.report import LeakageReport, Verdict, write_json
from medfed.audit.similarity import IMAGE_PSNR_THRESHOLD_DB
from medfed.errors import ConfigError


@pytest.fixture(scope="module")
def tabular() -> LeakageReport:
    steps: list[str] = []
    report = run_leakage_audit(LeakageConfig(), progress=steps.append)
    assert len(steps) == 4
    return report


def test_default_protection_passes_the_tabular_audit(tabular: LeakageReport) -> None:
    raw, protected = tabular.scenario("raw"), tabular.scenario("protected")
    assert raw.leaks and raw.similarity.per_record[0] > 0.999
    assert raw.similarity.secondary[0] < 1e-3  # relative error: the values themselves
    assert not protected.leaks
    assert protected.similarity.max < 0.9
    assert tabular.verdict is Verdict.PASS


def test_secure_aggregation_alone_still_reveals_single_record_sites(
    tabular: LeakageReport,
) -> None:
    """The honest finding: a sum of 4 one-record updates exposes the records that own a row."""
    secagg = tabular.scenario("secagg-only")
    assert secagg.leaks
    assert secagg.similarity.reconstructed >= 2
    assert len(secagg.similarity.per_record) == 4


@pytest.mark.slow
def test_default_protection_passes_the_imaging_audit() -> None:
    report = run_leakage_audit(LeakageConfig(task="imaging"))
    raw, protected = report.scenario("raw"), report.scenario("protected")
    assert raw.similarity.max >= IMAGE_PSNR_THRESHOLD_DB
    assert "label inferred" in raw.attack
    assert protected.similarity.max < IMAGE_PSNR_THRESHOLD_DB - 5
    assert report.verdict is Verdict.PASS


def test_a_raw_update_that_does_not_leak_makes_the_audit_inconclusive() -> None:
    """64 records in one step: no ReLU row belongs to one record, so nothing to protect."""
    report = run_leakage_audit(LeakageConfig(sites=2, batch_size=64))
    assert not report.scenario("raw").leaks
    assert report.verdict is Verdict.INCONCLUSIVE


def test_clipping_without_noise_or_secure_aggregation_fails() -> None:
    report = run_leakage_audit(LeakageConfig(noise_multiplier=0.0, secagg=False))
    protected = report.scenario("protected")
    assert protected.leaks and "no secure aggregation" in protected.description
    assert report.verdict is Verdict.FAIL


def test_json_report(tabular: LeakageReport, tmp_path: Path) -> None:
    path = write_json(tabular, tmp_path / "leak.json")
    data = json.loads(path.read_text())
    assert data["verdict"] == "pass" and data["config"]["clip"] == 1.0
    assert [s["name"] for s in data["scenarios"]] == ["raw", "secagg-only", "protected"]
    assert "0.95" in data["thresholds"]
    with pytest.raises(ConfigError, match="cannot write"):
        write_json(tabular, tmp_path / "missing" / "leak.json")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"task": "genomics"}, "--task"),
        ({"sites": 0}, "--sites"),
        ({"batch_size": 0}, "--batch-size"),
        ({"task": "imaging", "batch_size": 5}, "between 1 and 4"),
        ({"task": "imaging", "sites": 20, "batch_size": 2}, "at most 32"),
        ({"clip": 0.0}, "--clip"),
        ({"clip": float("nan")}, "--clip"),
        ({"noise_multiplier": -1.0}, "--noise-multiplier"),
        ({"seed": -1}, "--seed"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_bad_settings_are_one_sentence_errors(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        LeakageConfig(**changes)  # type: ignore[arg-type]


def test_more_records_than_the_data_set_holds() -> None:
    with pytest.raises(ConfigError, match="training records"):
        run_leakage_audit(LeakageConfig(sites=100, batch_size=64))
