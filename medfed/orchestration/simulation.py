"""A whole federation on one machine: data split into sites, a task, a strategy, a backend.

``simulate(config)`` is what ``medfed simulate`` and ``medfed demo`` run. The sites are built
where they run (in this process or in a worker), each loading only its own share of the data.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfed.config import DataConfig, RunConfig, TrainSettings, check_run
from medfed.data.files import is_data_file
from medfed.errors import ConfigError, RoundFailed
from medfed.orchestration.assembly import assemble_driver
from medfed.orchestration.backends.base import Backend, Request
from medfed.orchestration.backends.inprocess import InProcessBackend
from medfed.orchestration.checkpoint import RoundCheckpoint
from medfed.orchestration.driver import RoundDriver, RoundObserver, RoundResult
from medfed.orchestration.protection import SiteProtection, protection_for
from medfed.records import Instruction, Metrics, Operation, Params, Reply, SiteFailure
from medfed.site.runtime import SiteRuntime
from medfed.site.state import DirectoryStateStore, MemoryStateStore, SiteStateStore
from medfed.strategies import FedAvg

if TYPE_CHECKING:
    from medfed.data.base import DataSpec, FederatedDataset, SiteData
    from medfed.orchestration.harmonise import Harmonisation
    from medfed.orchestration.quality import QualityReport
    from medfed.site.task import Task

__all__ = ["Comparison", "Simulation", "SimulationResult", "SimulationSites", "simulate"]


def _load_task(ref: str | None, spec: DataSpec) -> Task:
    from medfed.site.task import default_task
    from medfed.site.task_loading import load_task

    return default_task(spec) if ref is None else load_task(ref)


def _load_data(data: DataConfig, seed: int) -> FederatedDataset:
    from medfed.data import load_dataset

    return load_dataset(
        data.name,
        num_sites=data.sites,
        data_dir=data.dir,
        seed=seed,
        options=data.options,
        raw=data.harmonise != "none",  # a file's gaps kept: the federation's mean fills them
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
    # where the sites keep their state between rounds (a run folder's site-state/); None:
    # in this process's memory (a worker that restarts then starts its sites afresh)
    state_dir: str | None = None
    # the federation's feature standardisation ([data] harmonise), learnt before training
    harmonisation: Harmonisation | None = None
    answer_stats: bool = False  # sites answer STATS from their records as loaded (harmonise)
    _dataset: FederatedDataset | None = field(default=None, repr=False)
    _task: Task | None = field(default=None, repr=False)
    _memory: SiteStateStore | None = field(default=None, repr=False)

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
        state["_memory"] = None
        return state

    @property
    def states(self) -> SiteStateStore:
        """The sites' state store: the state folder, or one in this process's memory."""
        if self.state_dir is not None:
            return DirectoryStateStore(self.state_dir)
        if self._memory is None:
            self._memory = MemoryStateStore()
        return self._memory

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

    def site_data(self, name: str) -> SiteData:
        """A site's records as it trains on them (harmonised when the run harmonises)."""
        data = self.dataset.site(name)
        return data if self.harmonisation is None else self.harmonisation.apply(data)

    def pooled(self) -> SiteData:
        """Every site's training records in one place, harmonised as the sites' are."""
        dataset = self.dataset
        if self.harmonisation is None:
            return dataset.pooled()
        return replace(dataset, sites=tuple(self.site_data(s.name) for s in dataset.sites)).pooled()

    def make(self, name: str) -> SiteRuntime:
        data = self.site_data(name)
        p = self.protection
        spec, states = self.dataset.spec, self.states
        stats = None
        if self.answer_stats:
            from medfed.site.statistics import SiteDataSource

            stats = SiteDataSource(self.dataset.site(name), spec)
        if p is None:
            app = self.task.site_app(data, spec, self.settings, state=states)
            return SiteRuntime(name, app, stats=stats)
        app = self.task.site_app(
            data, spec, self.settings, privacy=p.config, rounds=p.rounds, state=states
        )
        return SiteRuntime(name, app, dp=p.dp_steps(), secure=p.secure_site(name), stats=stats)


SMALL_SITE = 50  # training records under which a site's figures are noisy


def site_warnings(dataset: FederatedDataset) -> tuple[str, ...]:
    """What the report should say about small and skewed sites: they train and are
    evaluated like any other, but some of their figures mean little."""
    from medfed.data.base import TaskKind

    out = []
    classifies = dataset.spec.kind in (TaskKind.BINARY, TaskKind.MULTICLASS)
    for site in dataset.sites:
        if site.num_train < SMALL_SITE:
            out.append(
                f"{site.name}: {site.num_train} training records (under {SMALL_SITE}): its "
                "local-only model and its own metrics are noisy"
            )
        if classifies and site.num_train and len(np.unique(site.y_train)) < 2:
            out.append(
                f"{site.name}: one outcome class in its training records: a model trained "
                "there alone cannot tell the classes apart"
            )
        if classifies and site.num_test and len(np.unique(site.y_test)) < 2:
            out.append(f"{site.name}: one outcome class in its test records: no AUROC there")
    return tuple(out)


def _refuse_site_standardising(name: str) -> None:
    """Harmonising a data set file whose sites are told to standardise alone is a mistake."""
    from medfed.data.data_file import describes_images, read_source, read_toml

    if is_data_file(name) and not describes_images(read_toml(name)[1]):
        source = read_source(name)
        if source.standardize == "site":
            raise ConfigError(
                f'{source.path} says standardize = "site" (the default: each site standardises '
                'alone); set standardize = "none" in it for [data] harmonise to standardise '
                "with the federation's figures"
            )


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
    """Per site: the federated, local-only and pooled models on that site's own test set,
    and the site's personalised model when the run personalises."""

    site: str
    num_test: int
    federated: Metrics | None
    local: Metrics | None
    pooled: Metrics | None
    personalised: Metrics | None = None


@dataclass
class SimulationResult:
    params: Params
    history: list[RoundResult]
    comparison: list[Comparison]
    dataset: str
    sites: list[str]
    seconds: float
    resumed_after: int = 0  # rounds done before this process took the run over (--resume)
    harmonisation: Harmonisation | None = None  # [data] harmonise: what the sites used
    quality: QualityReport | None = None  # the data-quality report across sites, if made
    quality_note: str | None = None  # why there is none (images, unreadable as raw values)
    warnings: tuple[str, ...] = ()  # sites too small or too skewed for some figures to mean much


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
            run_name="local-only",  # the sites' state of the federated run stays out of it
        )
        try:
            params = _train(driver, initial, rounds, f"local-only {name}", progress)
        except RoundFailed:
            local[name] = None
            continue
        metrics = evaluate_everywhere(backend, params, seed=config.seed, sites=[name])[name]
        local[name] = metrics if isinstance(metrics, Metrics) else None

    pooled_sites = LocalSites(factory.task, dataset.spec, config.train, [factory.pooled()])
    pooled_backend = InProcessBackend(pooled_sites)
    driver = RoundDriver(
        strategy=FedAvg(min_sites=1),
        backend=pooled_backend,
        seed=config.seed,
        evaluate_every=0,
        run_name="pooled",
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

    def __init__(
        self,
        config: RunConfig,
        *,
        task: Task | None = None,
        state_dir: str | Path | None = None,
        dataset: FederatedDataset | None = None,
    ) -> None:
        """``dataset``: sites already loaded (e.g. a benchmark's validation split) instead of
        loading ``config.data``; in-process backend only (workers load ``config.data``)."""
        # every setting checked, the simulation's defaults filled in (what the run folder keeps)
        config = check_run(config, "simulation")
        if is_data_file(config.data.name):  # the run folder's config.toml replays from anywhere
            absolute = str(Path(config.data.name).expanduser().absolute())
            config = config.with_overrides(**{"data.name": absolute})
        self.config = config
        if config.data.harmonise != "none":
            _refuse_site_standardising(config.data.name)
        self.factory = SimulationSites(
            data=config.data,
            seed=config.seed,
            settings=config.train,
            task_ref=config.task,
            state_dir=None if state_dir is None else str(state_dir),
        )
        if task is not None:
            self.factory._task = task
        if dataset is not None:
            if config.backend.kind == "process":
                raise ConfigError("a given data set runs on the in-process backend only")
            self.factory._dataset = dataset
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
        if config.data.harmonise != "none":
            self.factory.harmonisation = self._harmonise()
        self._quality: QualityReport | None = None
        self._quality_note: str | None = None
        self._quality_done = False

    @property
    def dataset(self) -> FederatedDataset:
        return self.factory.dataset

    @property
    def harmonisation(self) -> Harmonisation | None:
        """The federation's feature standardisation ([data] harmonise), or None."""
        return self.factory.harmonisation

    def data_quality(self) -> QualityReport | None:
        """The data-quality report across the sites (made once, before training; None for
        images, when ``evaluation.quality`` is off, or with :attr:`quality_note` saying why).

        Federated statistics only (minimum-count suppression; under secure aggregation the
        federation's figures alone), over the values as recorded (a file's gaps kept)."""
        if self._quality_done:
            return self._quality
        self._quality_done = True
        if not self.config.evaluation.quality:
            return None
        if len(self.dataset.spec.input_shape) != 1:
            self._quality_note = "images: the data-quality report is for tables of features"
            return None
        from medfed.errors import DataError
        from medfed.orchestration.quality_simulation import simulate_quality

        try:
            self._quality = simulate_quality(
                self.config.data,
                seed=self.config.seed,
                secure_aggregation=self.config.privacy.secure_aggregation,
            )
        except (DataError, RoundFailed) as exc:
            self._quality_note = f"no data-quality report: {exc}"
        return self._quality

    @property
    def quality_note(self) -> str | None:
        return self._quality_note

    def _harmonise(self) -> Harmonisation:
        """One statistics exchange over the sites' raw training records, before training
        (through secure aggregation when the run has it)."""
        from medfed.data.statistics.table import feature_names
        from medfed.orchestration.harmonise import learn_harmonisation

        spec = self.dataset.spec
        if len(spec.input_shape) != 1:
            raise ConfigError(
                f"[data] harmonise is for tables of features; {self.dataset.name!r} holds "
                f'images of shape {spec.input_shape}: set harmonise = "none"'
            )
        learner = replace(self.factory, answer_stats=True, state_dir=None, _memory=None)
        backend = InProcessBackend(learner)
        try:
            return learn_harmonisation(
                backend,
                self.config.data.harmonise,  # type: ignore[arg-type]  # checked by DataConfig
                features=feature_names(spec),
                secure=self.secure,
            )
        finally:
            backend.close()

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
        self,
        *,
        observers: Sequence[RoundObserver] = (),
        progress: Progress | None = None,
        resume: RoundCheckpoint | None = None,
    ) -> SimulationResult:
        """Train, evaluate every round, then the baselines if configured.

        ``resume``: go on after the round of this checkpoint (a run folder's, with its model),
        with the strategy's, the privacy and the sites' state as they were then.
        """
        config = self.config
        start = time.perf_counter()
        self.data_quality()
        done = 0 if resume is None else resume.round
        if resume is not None and resume.model is None:
            raise ConfigError("this checkpoint holds no model; a run cannot resume from it")
        temporary = None
        if config.backend.kind == "process" and self.factory.state_dir is None:
            # workers keep their sites' state on disk, so a restarted worker goes on with it
            temporary = tempfile.TemporaryDirectory(prefix="medfed-site-state-")
            self.factory.state_dir = temporary.name
        backend = make_backend(config, self.factory)
        history: list[RoundResult] = []

        class _Keep:
            def on_round_end(self, result: RoundResult) -> None:
                history.append(result)
                if progress is not None:
                    progress("federated", result.round, config.rounds)

        try:
            driver = self.driver(backend, observers=[*observers, _Keep()])
            params = self.initial
            if resume is not None:
                assert resume.model is not None
                driver.restore(resume, rounds_done=done)
                params = resume.model
            params = driver.run(params, rounds=config.rounds, first_round=done + 1)
            comparison: list[Comparison] = []
            if config.evaluation.baselines:
                final = history[-1].eval_metrics if history else self._evaluated(backend, params)
                comparison = run_baselines(
                    config, self.factory, backend, self.initial, final, progress
                )
                personal = history[-1].personal_metrics if history else {}
                if personal:
                    comparison = [replace(c, personalised=personal.get(c.site)) for c in comparison]
        finally:
            backend.close()
            if temporary is not None:
                self.factory.state_dir = None
                temporary.cleanup()
        return SimulationResult(
            params=params,
            history=history,
            comparison=comparison,
            dataset=self.dataset.name,
            sites=self.dataset.site_names,
            seconds=time.perf_counter() - start,
            resumed_after=done,
            harmonisation=self.harmonisation,
            quality=self._quality,
            quality_note=self._quality_note,
            warnings=site_warnings(self.dataset),
        )

    def _evaluated(self, backend: Backend, params: Params) -> dict[str, Metrics]:
        """The final model at every site (a run resumed after its last round, for the
        baselines' comparison)."""
        out = evaluate_everywhere(backend, params, seed=self.config.seed)
        return {s: m for s, m in out.items() if isinstance(m, Metrics)}


def simulate(
    config: RunConfig,
    *,
    task: Task | None = None,
    observers: Sequence[RoundObserver] = (),
    progress: Progress | None = None,
) -> SimulationResult:
    """Run a simulated federation as configured. Raises RoundFailed, ConfigError, DataError."""
    return Simulation(config, task=task).run(observers=observers, progress=progress)
