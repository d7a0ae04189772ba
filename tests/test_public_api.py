"""The public surface is small and deliberate; this test pins it."""

from __future__ import annotations

import subprocess
import sys

import medfed

EXPECTED = {
    "ConfigError", "DataError", "DataSpec", "FedAvg", "FederatedDataset", "FitResult",
    "Instruction", "MedfedError", "Metrics", "Operation", "Params", "Reply", "RoundFailed",
    "RunConfig", "SimulationResult", "SiteApp", "SiteData", "SiteFailure", "StatsQuery",
    "StatsResult", "Strategy", "Task",
    "TaskLoadError", "TrainContext", "TrainSettings", "Update", "UsageError", "__version__",
    "default_task", "load_config", "load_dataset", "load_task", "simulate", "stats",
}  # fmt: skip


def test_public_names_are_pinned() -> None:
    assert set(medfed.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in medfed.__all__:
        assert getattr(medfed, name) is not None, name


def test_import_is_light() -> None:
    code = (
        "import sys, medfed\n"
        "names = ('torch', 'pandas', 'sklearn', 'lifelines', 'scipy')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import medfed pulled in: {out.stdout}"


def test_stats_runs_a_simulated_query_and_suppresses_small_counts() -> None:
    result = medfed.stats(
        "breast-cancer", features=["mean radius"], statistics=["count", "mean", "histogram"],
        min_count=10,
    )  # fmt: skip
    assert isinstance(result, medfed.StatsResult)
    f = result.federation.features["mean radius"]
    assert f.count == 569 and f.mean is not None
    assert f.histogram is not None
    assert all(c is None or c == 0 or c >= 10 for c in f.histogram.counts)
    assert None in f.histogram.counts  # a tail bin with a few records is suppressed
    same = medfed.stats("breast-cancer", medfed.StatsQuery(features=("mean radius",)))
    assert same.federation.features["mean radius"].count == 569


def test_stats_refuses_a_bad_query_with_a_clear_error() -> None:
    import pytest

    with pytest.raises(medfed.ConfigError, match="unknown statistic"):
        medfed.stats(statistics=["median"])
    with pytest.raises(medfed.DataError, match="no feature 'age'"):
        medfed.stats(features=["age"])
