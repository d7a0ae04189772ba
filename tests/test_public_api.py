"""The public surface is small and deliberate; this test pins it."""

from __future__ import annotations

import subprocess
import sys

import medfed

EXPECTED = {
    "ConfigError", "DataError", "DataSpec", "FedAvg", "FederatedDataset", "FitResult",
    "Instruction", "MedfedError", "Metrics", "Operation", "Params", "Reply", "RoundFailed",
    "RunConfig", "SimulationResult", "SiteApp", "SiteData", "SiteFailure", "Strategy", "Task",
    "TaskLoadError", "TrainContext", "TrainSettings", "Update", "UsageError", "__version__",
    "default_task", "load_config", "load_dataset", "load_task", "simulate",
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
