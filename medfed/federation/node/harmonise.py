"""A training job with ``[data] harmonise`` at a node: one statistics exchange, then training
on features standardised with the federation's figures.

The data steward approved the job with its harmonisation (it is one of the approval's terms),
so the node answers exactly one kind of ``STATS`` exchange for it — the moments of every
feature over its training records as recorded (gaps kept, no standardising alone), at the
node's minimum count, without DP — and refuses any other. Every ``TRAIN`` and ``EVALUATE`` of
the job then carries the federation's figures (``RoundSettings.harmonise``); the node checks
that they are of the approved method and of its features, and trains on its records
harmonised with them (the site app rebuilt once per set of figures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from medfed.data.base import DataSpec, SiteData
from medfed.data.statistics import DEFAULT_MIN_COUNT
from medfed.data.statistics.table import feature_names
from medfed.errors import UsageError
from medfed.federation.node.checks import ProtocolError
from medfed.messages import HarmoniseSettings
from medfed.orchestration.harmonise import Harmonisation
from medfed.records import Instruction, Operation
from medfed.site.runtime import SiteRuntime
from medfed.site.statistics import SiteDataSource, query_of

__all__ = ["NodeHarmonise", "node_harmonise"]


@dataclass
class NodeHarmonise:
    """The approved harmonisation of one job at this node."""

    method: str
    raw: SiteData  # the records as recorded: what the exchange reads, what gets harmonised
    spec: DataSpec
    make_runtime: Callable[[SiteData], SiteRuntime]
    min_count: int = DEFAULT_MIN_COUNT
    _current: tuple[HarmoniseSettings, SiteRuntime] | None = field(default=None, repr=False)

    @property
    def features(self) -> tuple[str, ...]:
        return feature_names(self.spec)

    def source(self) -> SiteDataSource:
        return SiteDataSource(self.raw, self.spec)

    def check(self, instruction: Instruction) -> None:
        """Refuse any statistics exchange but the approved harmonisation's."""
        if instruction.operation is not Operation.STATS:
            return
        query, min_records = query_of(instruction.message)
        asked = (query.stage, query.split, query.within, query.survival, query.noise_multiplier)
        if asked != ("moments", "train", True, False, None) or query.features != self.features:
            raise ProtocolError(
                "this job was approved with harmonisation, which asks only the moments of "
                "every feature over the training records; the coordinator asked for more"
            )
        if min_records < self.min_count:
            raise ProtocolError(
                f"the harmonisation exchange asks a minimum count of {min_records}, below this "
                f"site's {self.min_count}"
            )

    def runtime(self, instruction: Instruction, base: SiteRuntime) -> SiteRuntime:
        """The runtime that answers ``instruction``: the harmonised one for training."""
        if instruction.operation not in (Operation.TRAIN, Operation.EVALUATE):
            return base
        given = instruction.settings.harmonise
        if given is None or given.method != self.method:
            raise ProtocolError(
                f"this job was approved with harmonise = {self.method!r}; the round sends "
                f"{'none' if given is None else repr(given.method)}"
            )
        if len(given.mean) != len(self.features):
            raise ProtocolError(
                f"the round's harmonisation is of {len(given.mean)} features; this site has "
                f"{len(self.features)}"
            )
        if self._current is None or self._current[0] != given:
            harmonised = Harmonisation.from_settings(given, self.features).apply(self.raw)
            self._current = (given, self.make_runtime(harmonised))
        return self._current[1]


def node_harmonise(
    method: str,
    *,
    raw: SiteData,
    spec: DataSpec,
    announced_features: object,
    make_runtime: Callable[[SiteData], SiteRuntime],
) -> NodeHarmonise:
    """The job's harmonisation here; a job whose features are not this site's is refused."""
    if method not in ("standardise", "combat"):
        raise UsageError(f"this job asks for harmonise = {method!r}, which this node does not know")
    if len(spec.input_shape) != 1:
        raise UsageError("this job asks to harmonise features, but this site serves images")
    ours = feature_names(spec)
    given = announced_features
    if given is not None and (not isinstance(given, list) or tuple(map(str, given)) != ours):
        raise UsageError(
            "this job harmonises features other than this site's data set's (its data spec "
            "names different feature columns); the node refuses it"
        )
    return NodeHarmonise(method, raw, spec, make_runtime)
