"""What a node holds for one job it takes part in, and how a training job's is built.

:func:`training_context` loads the approved task file and builds the job's site app and its
protection (DP steps, budget, secure aggregation); a statistics job's context is
:func:`medfed.federation.node.statistics.statistics_context`. :func:`spec_from_json` is a
job's data spec as the node builds its model for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.config import TrainSettings
from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.errors import UsageError
from medfed.federation.node.harmonise import NodeHarmonise, node_harmonise
from medfed.federation.node.privacy import JobProtection, check_required, job_privacy, protect_job
from medfed.federation.node.site_app import job_site_app
from medfed.records import Instruction
from medfed.site.runtime import SiteRuntime
from medfed.site.state import DirectoryStateStore

__all__ = ["JobContext", "spec_from_json", "training_context"]


@dataclass
class JobContext:
    task_sha256: str
    runtime: SiteRuntime
    protection: JobProtection
    # checks an instruction against what was approved before the runtime answers it
    check: Callable[[Instruction], None] | None = None
    # a job with [data] harmonise: its one statistics exchange, then harmonised training
    harmonise: NodeHarmonise | None = None

    def runtime_for(self, instruction: Instruction) -> SiteRuntime:
        """The runtime that answers ``instruction`` (checked against the approval first)."""
        if self.check is not None:
            self.check(instruction)
        if self.harmonise is None:
            return self.runtime
        self.harmonise.check(instruction)
        return self.harmonise.runtime(instruction, self.runtime)


def spec_from_json(raw: dict[str, Any]) -> DataSpec:
    """A job's data spec as the node builds its model for it (the benchmarks' nodes use it)."""
    return DataSpec(
        kind=TaskKind(raw["kind"]),
        input_shape=tuple(raw["input_shape"]),
        n_classes=int(raw.get("n_classes", 2)),
        target_center=float(raw.get("target_center", 0.0)),
        target_scale=float(raw.get("target_scale", 1.0)),
    )


def training_context(
    job_id: str,
    announced: dict[str, Any],
    *,
    sha: str,
    code_path: Path,
    site: str,
    data: SiteData,
    spec: DataSpec,
    dataset: str,
    state_dir: Path,
    require: frozenset[str],
    identity_key: Any,
    say: Callable[[str], None],
    raw_data: Callable[[], SiteData] | None = None,
) -> JobContext:
    """The approved task file at ``code_path`` as this site's app for ``job_id``.

    ``raw_data``: the site's records as recorded (gaps kept, no standardising alone), for a
    job that harmonises; None: ``data`` as it is.
    """
    from medfed.site.task_loading import load_task

    task = load_task(f"{code_path}:task")
    # the site app first (a task DP-SGD cannot train is refused before any reservation);
    # then a DP job reserves its rounds on this data set's budget, or is refused
    privacy = job_privacy(announced.get("privacy"))
    check_required(require, privacy)
    method = str(announced.get("harmonise") or "none")
    if method != "none" and privacy.dp != "none":
        raise UsageError(
            "this job harmonises with DP; the harmonisation's figures are not covered by its "
            "ε, so the node refuses it"
        )
    if method != "none":
        data = data if raw_data is None else raw_data()

    def make_app(records: SiteData) -> Any:
        return job_site_app(
            task,
            records,
            spec,
            TrainSettings(**announced.get("train", {})),
            privacy,
            rounds=int(announced.get("rounds") or 1),
            state=DirectoryStateStore(state_dir / "site-state"),
        )

    app = make_app(data)
    protection = protect_job(
        job_id,
        announced,
        site=site,
        dataset=dataset,
        state_dir=state_dir,
        identity_key=identity_key,
        num_train=data.num_train,
    )
    dp_sgd = getattr(app, "dp_sgd", None)
    if privacy.dp == "sample" and (
        dp_sgd is None or dp_sgd.noise_multiplier != protection.sample_noise
    ):
        protection.finish()
        raise UsageError(
            "this job asks for DP-SGD but its site app does not train with the noise this "
            "node reserved its budget for; the node refuses it"
        )
    if protection.sample_noise is not None:
        say(
            f"{job_id}: DP-SGD with noise multiplier {protection.sample_noise:.3g} (noise "
            "and sampling from OS-seeded generators; Opacus's secure_mode is not used)"
        )
    runtime = SiteRuntime(site, app, dp=protection.dp, secure=protection.secure)
    if method == "none":
        return JobContext(sha, runtime, protection)
    harmonise = node_harmonise(
        method,
        raw=data,
        spec=spec,
        announced_features=(announced.get("data_spec") or {}).get("feature_names"),
        make_runtime=lambda records: SiteRuntime(
            site, make_app(records), dp=protection.dp, secure=protection.secure
        ),
    )
    runtime.stats = harmonise.source()  # answers the one approved exchange
    say(f"{job_id}: features harmonised with the federation's figures ({method})")
    return JobContext(sha, runtime, protection, harmonise=harmonise)
