"""What an audit found: results per scenario, the verdict, and their JSON form.

The verdict logic is the same for both audits:

- **inconclusive** — the attack did not succeed on the *unprotected* target (the raw update,
  or the model trained without DP). An audit whose attack fails everywhere shows nothing
  about the protection, so it cannot pass.
- **fail** — the attack succeeded on the unprotected target and still succeeds on the
  protected one: the protection as configured does not stop it.
- **pass** — the attack succeeded on the unprotected target and fails on the protected one.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.audit.similarity import Similarity
from medfed.errors import ConfigError

__all__ = [
    "LeakageReport",
    "MembershipReport",
    "MembershipResult",
    "ScenarioResult",
    "Verdict",
    "decide",
    "write_json",
]


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


def decide(*, unprotected_leaks: bool, protected_leaks: bool) -> Verdict:
    """The verdict from whether the attack succeeded without and with protection."""
    if not unprotected_leaks:
        return Verdict.INCONCLUSIVE
    return Verdict.FAIL if protected_leaks else Verdict.PASS


@dataclass(frozen=True)
class ScenarioResult:
    """One attack on one view of the updates (what the coordinator sees in a scenario)."""

    name: str
    description: str
    attack: str
    similarity: Similarity
    seconds: float

    @property
    def leaks(self) -> bool:
        return self.similarity.leaks

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "attack": self.attack,
            "leaks": self.leaks,
            "seconds": round(self.seconds, 3),
            **self.similarity.as_dict(),
        }


@dataclass(frozen=True)
class LeakageReport:
    """The gradient-inversion audit: every scenario, and the verdict on ``raw`` vs ``protected``.

    ``scenarios`` always holds ``raw`` (one site's unprotected update) and ``protected`` (what
    the coordinator sees under the configured protection), and may hold comparisons such as
    ``secagg-only``. The verdict compares ``raw`` with ``protected`` only.
    """

    config: Mapping[str, Any]
    scenarios: tuple[ScenarioResult, ...]
    thresholds: str

    def scenario(self, name: str) -> ScenarioResult:
        for result in self.scenarios:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def verdict(self) -> Verdict:
        return decide(
            unprotected_leaks=self.scenario("raw").leaks,
            protected_leaks=self.scenario("protected").leaks,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "audit": "leakage",
            "verdict": self.verdict.value,
            "thresholds": self.thresholds,
            "config": dict(self.config),
            "scenarios": [s.as_dict() for s in self.scenarios],
        }


@dataclass(frozen=True)
class MembershipResult:
    """The loss-threshold attack on one trained model.

    ``auroc_low``/``auroc_high``: a 95 % interval (Hanley & McNeil 1982 standard error).
    ``epsilon`` is None for a model trained without DP.
    """

    name: str
    description: str
    auroc: float
    auroc_low: float
    auroc_high: float
    threshold: float
    member_loss: float
    nonmember_loss: float
    test_auroc: float | None
    epsilon: float | None
    delta: float | None
    seconds: float

    @property
    def leaks(self) -> bool:
        """The attack beats chance: AUROC ≥ the threshold and its interval excludes 0.5."""
        return self.auroc >= self.threshold and self.auroc_low > 0.5

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "leaks": self.leaks,
            "auroc": self.auroc,
            "auroc_95": [self.auroc_low, self.auroc_high],
            "threshold": self.threshold,
            "member_loss": self.member_loss,
            "nonmember_loss": self.nonmember_loss,
            "test_auroc": self.test_auroc,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class MembershipReport:
    """The membership-inference audit: a model trained without DP and one with DP-SGD."""

    config: Mapping[str, Any]
    without_dp: MembershipResult
    with_dp: MembershipResult
    thresholds: str

    @property
    def verdict(self) -> Verdict:
        return decide(unprotected_leaks=self.without_dp.leaks, protected_leaks=self.with_dp.leaks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "audit": "membership",
            "verdict": self.verdict.value,
            "thresholds": self.thresholds,
            "config": dict(self.config),
            "results": [self.without_dp.as_dict(), self.with_dp.as_dict()],
        }


def _json_safe(value: Any) -> Any:
    """JSON has no infinities or NaN: they become the strings "inf", "-inf" and "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: LeakageReport | MembershipReport, path: str | Path) -> Path:
    """Write the report as JSON (UTF-8, indented); raises ConfigError if ``path`` is unusable."""
    target = Path(path).expanduser()
    text = json.dumps(_json_safe(report.as_dict()), indent=2, allow_nan=False) + "\n"
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot write the JSON report to {str(target)!r}: {reason}") from None
    return target
