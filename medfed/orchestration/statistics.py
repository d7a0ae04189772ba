"""The coordinator's side of federated statistics: STATS exchanges through any backend.

One exchange sends the same ``STATS`` instruction (the query in its message) to every site
and adds up the answers: in the clear (the coordinator then sees each site's sums and may
release per-site figures), or — with secure aggregation — through SecAgg+ as exact digits
(:mod:`medfed.data.statistics.exact`), so that the coordinator learns only the sums over
sites. :func:`run_statistics` runs a whole query (:func:`medfed.data.statistics.answer`);
:func:`simulate_statistics` does it over simulated sites (``medfed stats``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.config import BackendConfig, DataConfig
from medfed.data.statistics import (
    Contribution,
    Gathered,
    SiteQuery,
    StatsQuery,
    StatsResult,
    answer as answer_query,
)
from medfed.data.statistics.answer import resolve_features
from medfed.data.statistics.exact import DIGIT_BOUND, from_digit_sums
from medfed.errors import RoundFailed
from medfed.messages import RoundSettings, SecureSettings
from medfed.orchestration.backends.base import Backend, Request
from medfed.orchestration.secure_round import SecureAggregation, secure_sum
from medfed.records import Instruction, Metrics, Operation, Params
from medfed.secagg import ed25519_verifier
from medfed.site.app import FitResult
from medfed.site.runtime import SiteRuntime
from medfed.site.secure_aggregation import SecAggIdentity, SecureAggregationSite
from medfed.site.statistics import DIGITS_TENSOR, SiteDataSource

__all__ = [
    "StatsExchange",
    "StatsSites",
    "run_statistics",
    "simulate_statistics",
    "simulated_sites",
]

_EMPTY = Params()


def _layout(message: Any) -> tuple[tuple[str, int], ...]:
    return tuple((str(name), int(size)) for name, size in message["layout"])


@dataclass
class StatsExchange:
    """Exchanges of one query over ``backend``; each exchange is its own round number."""

    backend: Backend
    secure: SecureAggregation | None = None
    min_records: int = 1
    timeout: float | None = None
    run: str = "statistics"
    round: int = 0

    def __call__(self, query: SiteQuery) -> Gathered:
        self.round += 1
        sites = sorted(self.backend.site_names)
        settings = RoundSettings()
        if self.secure is not None:  # every site once, digits below the bound
            settings = RoundSettings(secure=SecureSettings(weights="uniform", bound=DIGIT_BOUND))
        message = {"query": query.to_json(), "min_records": self.min_records}
        instruction = Instruction(
            Operation.STATS, self.round, _EMPTY, seed=0, settings=settings, message=message,
            run=self.run,
        )  # fmt: skip
        requests: list[Request] = [(s, instruction) for s in sites]
        failures: dict[str, str] = {}
        parts: dict[str, Contribution] = {}
        layouts: dict[str, tuple[tuple[str, int], ...]] = {}
        lengths: dict[str, int] = {}
        for reply in self.backend.exchange(requests, timeout=self.timeout):
            if reply.failure is not None:
                failures[reply.site] = str(reply.failure)
                continue
            try:
                layout = _layout(reply.message or {})
                if self.secure is None:
                    if reply.update is None:
                        raise ValueError("a statistics reply without its sums")
                    blocks = {k: np.asarray(v, np.float64) for k, v in reply.update.delta.items()}
                    got = Contribution(blocks)
                    if got.layout != layout:
                        raise ValueError("the sums do not match the reply's layout")
                    parts[reply.site] = got
                else:
                    if reply.update is not None:
                        raise ValueError("a secure exchange's reply holds its sums back")
                    lengths[reply.site] = int((reply.message or {})["length"])
                layouts[reply.site] = layout
            except (KeyError, TypeError, ValueError) as exc:
                failures[reply.site] = f"InvalidReply: {exc}"
        common = _common_layout(layouts, failures)
        answered = tuple(s for s in sites if s in layouts and layouts[s] == common)
        if not answered:
            detail = "; ".join(f"{s}: {f}" for s, f in failures.items()) or "no site replied"
            raise RoundFailed(f"statistics: no site answered ({detail})")
        if self.secure is None:
            per_site = {s: parts[s] for s in answered}
            return Gathered(answered, Contribution.total(list(per_site.values())), per_site,
                            failures)  # fmt: skip
        settings_ = dataclasses.replace(
            self.secure, bound=DIGIT_BOUND, uniform_weights=True, modulus_bits=64, extra_values=0
        )
        like = Params({DIGITS_TENSOR: np.zeros(lengths[answered[0]], np.float64)})
        result = secure_sum(
            self.backend, settings=settings_, round=self.round, sites=answered, like=like,
            timeout=self.timeout,
        )  # fmt: skip
        failures.update({s: str(f) for s, f in result.failures.items()})
        sums = np.asarray(result.mean[DIGITS_TENSOR], np.float64) * result.total_weight
        return Gathered(result.survivors, from_digit_sums(sums, common), None, failures)


def _common_layout(
    layouts: dict[str, tuple[tuple[str, int], ...]], failures: dict[str, str]
) -> tuple[tuple[str, int], ...]:
    """The layout most sites answered with; a site that differs failed the exchange."""
    if not layouts:
        return ()
    counts: dict[tuple[tuple[str, int], ...], int] = {}
    for layout in layouts.values():
        counts[layout] = counts.get(layout, 0) + 1
    common = max(counts, key=lambda k: counts[k])
    for site, layout in layouts.items():
        if layout != common:
            failures[site] = "InvalidReply: its statistics have another layout than the others'"
    return common


def run_statistics(
    backend: Backend,
    query: StatsQuery,
    *,
    features: Sequence[str],
    secure: SecureAggregation | None = None,
    timeout: float | None = None,
) -> StatsResult:
    """Answer ``query`` over the sites of ``backend`` (``features``: the data's columns)."""
    names = resolve_features(query, tuple(features))
    exchange = StatsExchange(backend, secure, min_records=query.min_count, timeout=timeout)
    return answer_query(query, names, exchange, secure=secure is not None)


class _StatisticsOnly:
    """A site app of a statistics-only run: it answers STATS and refuses to train."""

    def fit(self, params: Params, instruction: Instruction) -> FitResult:
        raise RuntimeError("this site was started for statistics only; it does not train")

    def evaluate(self, params: Params, instruction: Instruction) -> Metrics:
        raise RuntimeError("this site was started for statistics only; it does not evaluate")


@dataclass
class StatsSites:
    """Simulated sites that answer statistics only (picklable for the process pool)."""

    data: DataConfig
    seed: int
    keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    names: list[str] = field(default_factory=list)

    def _dataset(self) -> Any:
        from medfed.data import load_dataset

        d = self.data  # a data set file's tables as recorded: gaps kept, not standardised
        return load_dataset(d.name, num_sites=d.sites, data_dir=d.dir, seed=self.seed,
                            options=d.options, raw=True)  # fmt: skip

    @property
    def site_names(self) -> list[str]:
        return list(self.names) if self.names else self._dataset().site_names

    def make(self, name: str) -> SiteRuntime:
        dataset = self._dataset()
        secure = None
        if self.keys:
            key = ed25519.Ed25519PrivateKey.from_private_bytes(self.keys[name])
            peers = {
                s: ed25519.Ed25519PrivateKey.from_private_bytes(k).public_key()
                for s, k in self.keys.items()
            }
            secure = SecureAggregationSite(SecAggIdentity(name, key, peers))
        source = SiteDataSource(dataset.site(name), dataset.spec)
        return SiteRuntime(name, _StatisticsOnly(), secure=secure, stats=source)


def simulated_sites(
    data: DataConfig,
    *,
    seed: int,
    names: Sequence[str],
    secure_aggregation: bool,
    job: str,
    backend: BackendConfig | None = None,
) -> tuple[Backend, SecureAggregation | None]:
    """Simulated sites of ``data`` that answer statistics only, in this process or a pool,
    with fresh identity keys each when the exchanges go through secure aggregation."""
    from medfed.orchestration.backends.inprocess import InProcessBackend

    factory = StatsSites(data=data, seed=seed, names=list(names))
    secure = None
    if secure_aggregation:
        factory.keys = {s: ed25519.Ed25519PrivateKey.generate().private_bytes_raw() for s in names}
        public = {
            s: ed25519.Ed25519PrivateKey.from_private_bytes(k).public_key()
            for s, k in factory.keys.items()
        }
        secure = SecureAggregation(job=job, verify_identity=ed25519_verifier(public))
    if backend is not None and backend.kind == "process":
        from medfed.orchestration.backends.process_pool import ProcessPoolBackend

        return ProcessPoolBackend(factory, workers=backend.workers), secure
    return InProcessBackend(factory), secure


def simulate_statistics(
    data: DataConfig,
    query: StatsQuery,
    *,
    seed: int = 0,
    secure_aggregation: bool = False,
    backend: BackendConfig | None = None,
) -> StatsResult:
    """``query`` over the simulated sites of ``data`` (each site loads only its own share)."""
    from medfed.data import load_dataset
    from medfed.data.statistics.table import feature_names

    dataset = load_dataset(data.name, num_sites=data.sites, data_dir=data.dir, seed=seed,
                           options=data.options, raw=True)  # fmt: skip
    be, secure = simulated_sites(
        data, seed=seed, names=dataset.site_names, secure_aggregation=secure_aggregation,
        job="statistics", backend=backend,
    )  # fmt: skip
    try:
        return run_statistics(be, query, features=feature_names(dataset.spec), secure=secure)
    finally:
        be.close()
