"""A whole federation on one machine: data split into sites, a task, a strategy, a backend.

``simulate(config)`` is what ``medfed simulate`` and ``medfed demo`` run. The sites are built
where they run (in this process or in a worker), each loading only its own share of the data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medfed.config import DataConfig, RunConfig, TrainSettings, check_run
from medfed.errors import ConfigError, RoundFailed
from medfed.orchestration.assembly import assemble_driver
from medfed.orchestration.backends.base import Backend, Request
from medfed.orchestration.backends.inprocess import InProcessBackend
from medfed.orchestration.driver import RoundDriver, RoundObserver, RoundResult
from medfed.orchestration.protection import SiteProtection, protection_for
from medfed.records import Instruction, Metrics, Operation, Params, Reply, SiteFailure
from medfed.site.runtime import SiteRuntime
from medfed.strategies import FedAvg

if TYPE_CHECKING:
    from medfed.data.base import DataSpec, FederatedDataset, SiteData
    from medfed.site.task import Task

__all__ = ["Comparison", "Simulation", "SimulationResult", "SimulationSites", "simulate"]


def _load_task(ref: str | None, spec: DataSpec) -> Task:
    from medfed.site.task import default_task
    from medfed.site.task_loading import load_task

    return default_task(spec) if ref is None else load_task(ref)


def _load_data(data: DataConfig, seed: int) -> FederatedDataset:
    from medfed.data import load_dataset

    return load_dataset(
        data.name, num_sites=data.sites, data_dir=data.dir, seed=seed, options=data.options
    )


@dataclass
class SimulationSites:
    """Builds simulated sites from a data set and a task; picklable for the process pool.

    A worker process rebuilds the data set from its configuration (deterministic) and keeps
    only what its own sites need.
    """

    data: DataConfig
    seed: int
    settings: TrainSettings
    task_ref: str | None = None
    names: list[str] = field(default_factory=list)
    protection: SiteProtection | None = None
    _dataset: FederatedDataset | None = field(default=None, repr=False)
    _task: Task | None = field(default=None, repr=False)

    def require_task_ref(self) -> None:
        """Worker processes rebuild the task from a reference, not from an object."""
        if self._task is not None and self.task_ref is None and not _is_default(self._task):
            raise ConfigError(
                "the process backend needs the task as a file reference (path.py:name); "
                "pass --task or use the in-process backend"
            )

    def __getstate__(self) -> dict[str, Any]:
        self.require_task_ref()
        state = dict(self.__dict__)
        state["_dataset"] = None
        state["_task"] = None
        return state

    @property
    def dataset(self) -> FederatedDataset:
        if self._dataset is None:
            self._dataset = _load_data(self.data, self.seed)
        return self._dataset

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = _load_task(self.task_ref, self.dataset.spec)
        return self._task

    @property
    def site_names(self) -> list[str]:
        return list(self.names) if self.names else self.dataset.site_names

    def make(self, name: str) -> SiteRuntime:
        data = self.dataset.site(name)
        p = self.protection
        if p is None:
            return SiteRuntime(name, self.task.site_app(data, self.dataset.spec, self.settings))
        app = self.task.site_app(
            data, self.dataset.spec, self.settings, privacy=p.config, rounds=p.rounds
        )
        return SiteRuntime(name, app, dp=p.dp_steps(), secure=p.secure_site(name))


def _is_default(task: Task) -> bool:
    return bool(getattr(task, "is_default", False))


class LocalSites:
    """In-process sites built from given site data (the baselines' sites)."""

    def __init__(
        self, task: Task, spec: DataSpec, settings: TrainSettings, sites: Sequence[SiteData]
    ) -> None:
        self._task, self._spec, self._settings = task, spec, settings
        self._sites = {s.name: s for s in sites}

    @property
    def site_names(self) -> list[str]:
        return list(self._sites)

    def make(self, name: str) -> SiteRuntime:
        return SiteRuntime(name, self._task.site_app(self._sites[name], self._spec, self._settings))


class SubsetBackend:
    """A view of a backend restricted to some of its sites (local-only baselines)."""

    def __init__(self, backend: Backend, names: Sequence[str]) -> None:
        self._backend = backend
        self._names = list(names)

    @property
    def site_names(self) -> list[str]:
        return list(self._names)

    def exchange(
        self, requests: Sequence[Request], *, timeout: float | None = None
    ) -> Iterator[Reply]:
        return self._backend.exchange(requests, timeout=timeout)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Comparison:
    """Per site: the federated, local-only and pooled models on that site's own test set."""

    site: str
    num_test: int
    federated: Metrics | None
    local: Metrics | None
    pooled: Metrics | None


@dataclass
class SimulationResult:
    params: Params
    history: list[RoundResult]
    comparison: list[Comparison]
    dataset: str
    sites: list[str]
    seconds: float


def make_backend(config: RunConfig, factory: SimulationSites) -> Backend:
    if config.backend.kind == "process":
        from medfed.orchestration.backends.process_pool import ProcessPoolBackend

        return ProcessPoolBackend(factory, workers=config.backend.workers)
    return InProcessBackend(factory)


def evaluate_everywhere(
    backend: Backend, params: Params, *, seed: int, sites: Sequence[str] | None = None
) -> dict[str, Metrics | SiteFailure]:
    """Evaluate ``params`` at each site on its own held-out data."""
    names = list(sites) if sites is not None else backend.site_names
    instruction = Instruction(operation=Operation.EVALUATE, round=0, params=params, seed=seed)
    out: dict[str, Metrics | SiteFailure] = {}
    for reply in backend.exchange([(n, instruction) for n in names]):
        out[reply.site] = (
            reply.failure if reply.failure is not None else (reply.metrics or Metrics())
        )
    return out


Progress = Callable[[str, int, int], None]


def _train(
    driver: RoundDriver, params: Params, rounds: int, label: str, progress: Progress | None
) -> Params:
    for r in range(1, rounds + 1):
        params = driver.run_round(r, params, last=r == rounds).params
        if progress is not None:
            progress(label, r, rounds)
    return params


def run_baselines(
    config: RunConfig,
    factory: SimulationSites,
    backend: Backend,
    initial: Params,
    final_eval: dict[str, Metrics],
    progress: Progress | None = None,
) -> list[Comparison]:
    """Local-only and pooled models, trained with the same trainer, rounds and epochs.

    Local-only: each site trains alone for the same rounds (FedAvg over one site). Pooled: one
    site holding every site's training records. Each is then evaluated at the sites, on their
    own held-out data, exactly as the federated model was.
    """
    dataset = factory.dataset
    rounds = config.rounds
    local: dict[str, Metrics | None] = {}
    for name in backend.site_names:
        driver = RoundDriver(
            strategy=FedAvg(min_sites=1),
            backend=SubsetBackend(backend, [name]),
            seed=config.seed,
            evaluate_every=0,
        )
        try:
            params = _train(driver, initial, rounds, f"local-only {name}", progress)
        except RoundFailed:
            local[name] = None
            continue
        metrics = evaluate_everywhere(backend, params, seed=config.seed, sites=[name])[name]
        local[name] = metrics if isinstance(metrics, Metrics) else None

    pooled_sites = LocalSites(factory.task, dataset.spec, config.train, [dataset.pooled()])
    pooled_backend = InProcessBackend(pooled_sites)
    driver = RoundDriver(
        strategy=FedAvg(min_sites=1), backend=pooled_backend, seed=config.seed, evaluate_every=0
    )
    pooled_params = _train(driver, initial, rounds, "pooled", progress)
    pooled = evaluate_everywhere(backend, pooled_params, seed=config.seed)

    rows = []
    for s in dataset.sites:
        p = pooled.get(s.name)
        rows.append(
            Comparison(
                site=s.name,
                num_test=s.num_test,
                federated=final_eval.get(s.name),
                local=local.get(s.name),
                pooled=p if isinstance(p, Metrics) else None,
            )
        )
    return rows


class Simulation:
    """A prepared simulation: data, task, strategy and initial model, all checked up front.

    Preparing first means a user mistake (unknown data set, bad task, impossible setting)
    is reported before anything is written or trained.
    """

    def __init__(self, config: RunConfig, *, task: Task | None = None) -> None:
        # every setting checked, the simulation's defaults filled in (what the run folder keeps)
        self.config = config = check_run(config, "simulation")
        self.factory = SimulationSites(
            data=config.data, seed=config.seed, settings=config.train, task_ref=config.task
        )
        if task is not None:
            self.factory._task = task
        dataset = self.factory.dataset
        if config.strategy.min_sites > len(dataset.sites):
            raise ConfigError(
                f"strategy.min_sites is {config.strategy.min_sites} but the data set "
                f"{dataset.name!r} has only {len(dataset.sites)} sites"
            )
        self.initial = self.factory.task.initial_params(dataset.spec, seed=config.seed)
        self.factory.names = dataset.site_names
        self.server_privacy, self.secure, self.factory.protection = protection_for(
            config, sites=dataset.site_names
        )
        if config.backend.kind == "process":
            self.factory.require_task_ref()

    @property
    def dataset(self) -> FederatedDataset:
        return self.factory.dataset

    def driver(self, backend: Backend, *, observers: Sequence[RoundObserver] = ()) -> RoundDriver:
        """This run's round driver over ``backend``, with its protection and ``observers``."""
        return assemble_driver(
            self.config,
            backend,
            privacy=self.server_privacy,
            secure=self.secure,
            observers=observers,
        )

    def run(
        self, *, observers: Sequence[RoundObserver] = (), progress: Progress | None = None
    ) -> SimulationResult:
        """Train, evaluate every round, then the baselines if configured."""
        config = self.config
        start = time.perf_counter()
        backend = make_backend(config, self.factory)
        history: list[RoundResult] = []

        class _Keep:
            def on_round_end(self, result: RoundResult) -> None:
                history.append(result)
                if progress is not None:
                    progress("federated", result.round, config.rounds)

        try:
            driver = self.driver(backend, observers=[*observers, _Keep()])
            params = driver.run(self.initial, rounds=config.rounds)
            comparison: list[Comparison] = []
            if config.evaluation.baselines:
                comparison = run_baselines(
                    config, self.factory, backend, self.initial, history[-1].eval_metrics, progress
                )
        finally:
            backend.close()
        return SimulationResult(
            params=params,
            history=history,
            comparison=comparison,
            dataset=self.dataset.name,
            sites=self.dataset.site_names,
            seconds=time.perf_counter() - start,
        )


def simulate(
    config: RunConfig,
    *,
    task: Task | None = None,
    observers: Sequence[RoundObserver] = (),
    progress: Progress | None = None,
) -> SimulationResult:
    """Run a simulated federation as configured. Raises RoundFailed, ConfigError, DataError."""
    return Simulation(config, task=task).run(observers=observers, progress=progress)
