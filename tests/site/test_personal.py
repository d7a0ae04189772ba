"""Personalisation at a site: the layers it keeps (FedBN's norm layers, FedPer's head) and
fine-tuning whose length a validation split of its own training records decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medfed.config import config_from_dict
from medfed.data.base import SiteData
from medfed.errors import ConfigError
from medfed.messages import PersonalSettings, RoundSettings, settings_from_json, settings_to_json
from medfed.orchestration.simulation import Simulation, simulate
from medfed.records import Metrics
from medfed.site.personal import best_finetune_epochs, personal_names
from medfed.site.state import DirectoryStateStore

BN_TASK = """
from torch import nn
from medfed.site.task import Task

def bn_mlp(spec):
    return nn.Sequential(
        nn.Linear(spec.input_shape[0], 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1)
    )

task = Task(bn_mlp)
"""


def test_the_kept_layers_are_the_norm_layers_or_the_head() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    assert personal_names(model, ("norm",)) == [
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
    ]  # fmt: skip
    assert personal_names(model, ("head",)) == ["3.weight", "3.bias"]
    assert len(personal_names(model, ("norm", "head"))) == 7
    assert personal_names(nn.Sequential(nn.Linear(3, 1)), ()) == []


def test_personal_settings_travel_and_bad_ones_are_refused() -> None:
    settings = RoundSettings(personal=PersonalSettings(layers=("norm",), finetune_epochs=3))
    assert settings_from_json(settings_to_json(settings)) == settings
    assert "personal" not in settings_to_json(RoundSettings())  # older peers see nothing new
    with pytest.raises(ValueError, match="norm' or 'head"):
        PersonalSettings(layers=("everything",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"personalise\.method"):
        config_from_dict({"personalise": {"method": "magic"}})
    with pytest.raises(ConfigError, match="not covered"):
        Simulation(
            config_from_dict(
                {
                    "personalise": {"method": "finetune"},
                    "privacy": {"dp": "client", "noise_multiplier": 1.0, "clip_norm": 1.0},
                }
            )
        )


def _site(n: int, seed: int = 0) -> SiteData:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return SiteData("s", x, y, x[:0], y[:0])


@pytest.mark.parametrize(("helps", "expected"), [(True, 4), (False, 0)])
def test_fine_tuning_lasts_as_long_as_the_validation_split_improves(
    helps: bool, expected: int
) -> None:
    model = nn.Linear(2, 1)
    seen: list[int] = []

    def train_epoch(m: nn.Module, data: SiteData) -> None:
        seen.append(data.num_train)
        with torch.no_grad():
            m.bias += 1.0  # the "loss" below is the bias: lower is better when helping

    def evaluate(m: nn.Module, data: SiteData) -> Metrics:
        bias = float(m.bias.detach())  # type: ignore[arg-type]
        return Metrics(num_examples=data.num_test, loss=-bias if helps else bias)

    before = float(model.bias.detach())
    epochs = best_finetune_epochs(
        model, _site(50), max_epochs=4, fraction=0.2, seed=1, train_epoch=train_epoch,
        evaluate=evaluate,
    )  # fmt: skip
    assert epochs == expected
    assert seen == [40] * 4  # trained on the rest of the training records, never all of them
    assert float(model.bias.detach()) == before  # the model is handed back as it came
    # a site of a handful of records has no validation split to speak of: no fine-tuning
    assert best_finetune_epochs(
        model, _site(8), max_epochs=4, fraction=0.2, seed=1, train_epoch=train_epoch,
        evaluate=evaluate,
    ) == 0  # fmt: skip


def _shifted(folder: Path) -> Path:
    """Three sites of one outcome rule whose features are offset and scaled differently
    (a scanner or an assay per hospital); left unstandardised."""
    rng = np.random.default_rng(3)
    lines = ['task = "binary"', 'label = "y"', 'standardize = "none"']
    for i, (offset, scale) in enumerate(((0.0, 1.0), (4.0, 3.0), (-3.0, 0.3))):
        x = rng.standard_normal((240, 2))
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
        z = offset + scale * x
        pd.DataFrame({"a": z[:, 0], "b": z[:, 1], "y": y}).to_csv(folder / f"h{i}.csv", index=False)
        lines += [f"[sites.h{i}]", f'train = "h{i}.csv"']
    (folder / "shifted.toml").write_text("\n".join(lines) + "\n")
    (folder / "bn_task.py").write_text(BN_TASK)
    return folder


def _config(folder: Path, strategy: str, **extra: object) -> dict[str, object]:
    return {
        "rounds": 8,
        "task": str(folder / "bn_task.py"),
        "data": {"name": str(folder / "shifted.toml")},
        "strategy": {"name": strategy},
        "train": {"batch_size": 16, "learning_rate": 0.05},
        "evaluation": {"baselines": False, "quality": False},
        **extra,
    }


def test_fedbn_sites_keep_their_own_norm_layers_and_beat_a_shared_batch_norm(
    tmp_path: Path,
) -> None:
    folder = _shifted(tmp_path)
    fedavg = simulate(config_from_dict(_config(folder, "fedavg")))
    sim = Simulation(config_from_dict(_config(folder, "fedbn")), state_dir=tmp_path / "state")
    fedbn = sim.run()
    last = fedbn.history[-1]
    assert sorted(last.personal_metrics) == ["h0", "h1", "h2"]
    assert not fedavg.history[-1].personal_metrics  # FedAvg has nothing personal to evaluate
    # each site's own running mean is its own features' (offset apart), not the federation's
    store = DirectoryStateStore(tmp_path / "state")
    means = [store.latest("federated", f"h{i}")["medfed.personal/1.running_mean"] for i in range(3)]
    assert not np.allclose(means[0], means[1]) and not np.allclose(means[1], means[2])

    def mean_accuracy(metrics: dict[str, Metrics]) -> float:
        return float(np.mean([m.accuracy for m in metrics.values()]))

    shared = mean_accuracy(fedavg.history[-1].eval_metrics)
    own = mean_accuracy(last.personal_metrics)
    assert own >= 0.9
    assert own > shared + 0.05  # local normalisation undoes each hospital's feature shift


def test_simulate_personalise_alone_fine_tunes_and_writes_personalised_per_site(
    tmp_path: Path,
) -> None:
    import json

    from click.testing import CliRunner

    from medfed.cli.main import cli

    out = tmp_path / "run"
    args = ["simulate", "--data", "breast-cancer", "--rounds", "2", "--baselines"]
    result = CliRunner().invoke(cli, [*args, "--personalise", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["personalised_per_site"]) == sorted(summary["final_per_site"])
    assert all("personalised" in row for row in summary["comparison"])
    assert 'method = "finetune"' in (out / "config.toml").read_text()  # replays the same
