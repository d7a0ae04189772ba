"""Sample-level DP: DP-SGD through Opacus on the bundled breast-cancer data (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from medfed.config import TrainSettings
from medfed.data import load_dataset
from medfed.data.base import DataSpec, FederatedDataset, SiteData
from medfed.errors import ConfigError, TaskLoadError
from medfed.messages import RoundSettings
from medfed.privacy.accounting import epsilon
from medfed.privacy.config import PrivacyConfig
from medfed.records import Instruction, Operation, Params
from medfed.site.dp_sgd import DPSGD, dp_sgd_sample_rate, dp_sgd_steps_per_round
from medfed.site.task import Task, default_task
from medfed.site.torch_app import TorchSiteApp

# Opacus warns once per PrivacyEngine that its secure_mode (torchcsprng) is off; medfed seeds
# the noise and the sampling from OS entropy instead (see medfed.site.dp_sgd).
pytestmark = pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning")

SAMPLE_DP = PrivacyConfig(dp="sample", noise_multiplier=1.0, clip_norm=1.0)
SETTINGS = TrainSettings(local_epochs=1, batch_size=32, learning_rate=0.5)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def breast() -> FederatedDataset:
    return load_dataset("breast-cancer")


def site_app(
    ds: FederatedDataset,
    privacy: PrivacyConfig | None = SAMPLE_DP,
    settings: TrainSettings = SETTINGS,
    task: Task | None = None,
    rounds: int | None = None,
) -> tuple[TorchSiteApp, Params]:
    task = task or default_task(ds.spec)
    app = task.site_app(
        ds.sites[0], ds.spec, settings, device="cpu", privacy=privacy, rounds=rounds
    )
    return app, task.initial_params(ds.spec, seed=0)


def train(app: TorchSiteApp, params: Params, round_: int, mu: float = 0.0) -> tuple[Params, float]:
    settings = RoundSettings(proximal_mu=mu)
    result = app.fit(params, Instruction(Operation.TRAIN, round_, params, 0, settings))
    assert result.metrics.loss is None and result.metrics.accuracy is None  # not DP: not sent
    assert result.report is not None and result.report.epsilon is not None
    return result.params, result.report.epsilon


def test_dp_sgd_learns_and_reports_a_growing_epsilon(breast: FederatedDataset) -> None:
    app, params = site_app(breast)
    assert app.dp_sgd is not None
    spent = []
    for round_ in range(4):
        params, eps = train(app, params, round_)
        spent.append(eps)
    assert all(np.isfinite(spent)) and spent == sorted(spent) and spent[0] > 0
    site = breast.sites[0]
    metrics = app.evaluate(params, Instruction(Operation.EVALUATE, 4, params, seed=0))
    assert metrics.num_examples == site.num_test
    assert metrics.auroc is not None and metrics.auroc > 0.9  # it learned despite the noise
    # Opacus's ε is the Poisson-subsampled Gaussian's, as medfed's accountant computes it
    n = site.num_train
    steps = 4 * dp_sgd_steps_per_round(num_examples=n, settings=SETTINGS)
    assert app.dp_sgd.steps == steps
    q = dp_sgd_sample_rate(num_examples=n, batch_size=SETTINGS.batch_size)
    ours = epsilon(noise_multiplier=1.0, sample_rate=q, rounds=steps, delta=1e-5)
    assert spent[-1] == pytest.approx(ours, rel=0.01)


def test_more_local_epochs_spend_more(breast: FederatedDataset) -> None:
    spent = []
    for epochs in (1, 3):
        app, params = site_app(breast, settings=TrainSettings(local_epochs=epochs, batch_size=64))
        spent.append(train(app, params, 0)[1])
    assert spent[0] < spent[1]


def test_a_target_epsilon_is_met_after_the_planned_rounds(breast: FederatedDataset) -> None:
    cfg = PrivacyConfig(dp="sample", target_epsilon=2.0, delta=1e-5)
    settings = TrainSettings(local_epochs=1, batch_size=64)
    app, params = site_app(breast, privacy=cfg, settings=settings, rounds=3)
    for round_ in range(3):
        params, eps = train(app, params, round_)
    assert eps <= 2.0 * 1.01  # Opacus's own RDP orders may differ in the last digits
    assert eps == pytest.approx(2.0, rel=0.02)
    with pytest.raises(ConfigError, match="number of rounds"):
        site_app(breast, privacy=cfg)


def test_the_noise_is_not_replayable_from_the_round_seed(breast: FederatedDataset) -> None:
    app, params = site_app(breast)
    a, _ = train(app, params, 0)
    b, _ = train(app, params, 0)  # same params, same instruction seed
    assert not all(np.array_equal(a[k], b[k]) for k in a)


def test_fedprox_step_is_applied_after_each_private_step(breast: FederatedDataset) -> None:
    # lr·μ = 1: the proximal step pulls the weights all the way back to the received ones
    app, params = site_app(breast)
    trained, _ = train(app, params, 0, mu=2.0)
    for name in params:
        np.testing.assert_allclose(trained[name], params[name], atol=1e-6)


def test_without_sample_dp_training_is_unchanged(breast: FederatedDataset) -> None:
    for privacy in (None, PrivacyConfig(), PrivacyConfig(dp="client")):
        app, params = site_app(breast, privacy=privacy)
        assert app.dp_sgd is None
        result = app.fit(params, Instruction(Operation.TRAIN, 0, params, seed=0))
        assert result.metrics.loss is not None and result.report is not None
        assert result.report.epsilon is None and result.report.local_steps  # no ε: no DP-SGD


def test_what_dp_sgd_cannot_train_is_refused(breast: FederatedDataset) -> None:
    def with_batchnorm(spec: DataSpec) -> nn.Module:
        return nn.Sequential(nn.Linear(spec.input_shape[0], 8), nn.BatchNorm1d(8), nn.Linear(8, 1))

    with pytest.raises(TaskLoadError, match="GroupNorm"):
        site_app(breast, task=Task(model=with_batchnorm))

    def own_loop(model: nn.Module, data: SiteData, ctx: object) -> None:
        return None

    with pytest.raises(ConfigError, match="own train function"):
        site_app(breast, task=Task(model=default_task(breast.spec).model, train=own_loop))

    lung = load_dataset("lung")
    with pytest.raises(ConfigError, match="survival"):
        site_app(lung)


def test_one_dpsgd_accounts_for_one_site(breast: FederatedDataset) -> None:
    dp = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    assert dp.epsilon() == 0.0 and dp.steps == 0
    app = default_task(breast.spec).site_app(breast.sites[0], breast.spec, SETTINGS, device="cpu")
    params = default_task(breast.spec).initial_params(breast.spec, seed=0)
    app._train = dp.train
    app.fit(params, Instruction(Operation.TRAIN, 0, params, seed=0))
    other = default_task(breast.spec).site_app(breast.sites[1], breast.spec, SETTINGS, device="cpu")
    other._train = dp.train
    with pytest.raises(ValueError, match="one site's data"):
        other.fit(params, Instruction(Operation.TRAIN, 0, params, seed=0))


def test_empty_poisson_samples_still_take_a_private_step(breast: FederatedDataset) -> None:
    """3 records sampled with q = 1/3: about 30 % of the 60 samples are empty; each is still
    a noised step, and is accounted for."""
    site = breast.sites[0]
    tiny = replace(site, x_train=site.x_train[:3], y_train=site.y_train[:3])
    task = default_task(breast.spec)
    settings = TrainSettings(local_epochs=20, batch_size=1)
    app = task.site_app(tiny, breast.spec, settings, device="cpu", privacy=SAMPLE_DP)
    params = task.initial_params(breast.spec, seed=0)
    trained, eps = train(app, params, 0)
    assert app.dp_sgd is not None and app.dp_sgd.steps == 60
    assert all(np.isfinite(v).all() for v in trained.values())
    assert eps == pytest.approx(
        epsilon(noise_multiplier=1.0, sample_rate=1 / 3, rounds=60, delta=1e-5), rel=0.01
    )


def test_a_restarted_site_goes_on_accounting_from_its_saved_history(
    breast: FederatedDataset, tmp_path
) -> None:
    """The accountant's history is site state: a node or worker that restarts reports the ε
    of every step taken so far, never a fresh count; a round run again is spent again."""
    from medfed.site.state import DirectoryStateStore

    task = default_task(breast.spec)

    def app() -> TorchSiteApp:
        return task.site_app(
            breast.sites[0],
            breast.spec,
            SETTINGS,
            device="cpu",
            privacy=SAMPLE_DP,
            state=DirectoryStateStore(tmp_path),
        )

    def fit(a: TorchSiteApp, params: Params, round_: int) -> tuple[Params, float]:
        instruction = Instruction(Operation.TRAIN, round_, params, 0, run="job-1")
        result = a.fit(params, instruction)
        assert result.report is not None and result.report.epsilon is not None
        return result.params, result.report.epsilon

    params = task.initial_params(breast.spec, seed=0)
    uninterrupted, _ = site_app(breast)
    reference, p = [], params
    for r in (1, 2, 3):
        p, eps = train(uninterrupted, p, r)
        reference.append(eps)

    first = app()
    p1, _ = fit(first, params, 1)
    p2, eps2 = fit(first, p1, 2)
    restarted = app()  # the process came back: a new DPSGD, the history from disk
    assert restarted.dp_sgd is not None and restarted.dp_sgd.epsilon() == 0.0
    _, eps3 = fit(restarted, p2, 3)
    assert eps2 == pytest.approx(reference[1], rel=1e-9)
    assert eps3 == pytest.approx(reference[2], rel=1e-9)
    # the coordinator runs round 3 again: the site has spent four rounds, and says so
    _, eps3_again = fit(app(), p2, 3)
    assert eps3_again > eps3
