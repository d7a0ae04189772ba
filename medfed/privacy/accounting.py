"""Privacy accounting: ε of repeated (subsampled) Gaussian mechanisms, by Google's dp_accounting.

No bound here is hand-written: every ε comes from ``dp_accounting``'s RDP accountant (the
default; Rényi DP with the improved conversion to (ε, δ)) or its PLD accountant (privacy loss
distributions; tighter, slower). One *round* is one Gaussian mechanism with noise multiplier
``σ`` (noise std / L2 sensitivity) applied to a Poisson sample of the protected units:

- client-level DP: the units are sites. A ``sample_rate`` below 1 claims amplification by
  sampling, which holds only if each site takes part in a round independently with that
  probability (Poisson sampling). medfed's runs draw a fixed number of sites per round, so
  they account every round at ``sample_rate = 1`` (no amplification), and so does
  ``medfed privacy plan``: both start their accountant with
  :func:`medfed.privacy.server.client_accountant`;
- sample-level DP (DP-SGD): the units are patients, one "round" is one optimizer step and
  ``sample_rate`` is batch size / records (Opacus does this accounting itself, see
  :mod:`medfed.site.dp_sgd`).

Neighbouring data sets differ by adding or removing one unit.

The RDP accountant logs (through absl) when its series for a fractional order does not
converge and it drops that order; dropping an order can only raise ε (ε is a minimum over
orders), so that message is filtered out while this module computes (a filter on absl's logger
for the duration of the call; nothing is installed at import). Every other message passes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import dp_accounting
import numpy as np
import numpy.typing as npt
from dp_accounting import mechanism_calibration
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from medfed.errors import ConfigError
from medfed.privacy.config import ACCOUNTANTS, AccountantKind

__all__ = [
    "ACCOUNTANTS",
    "AccountantKind",
    "GaussianRounds",
    "PrivacyAccountant",
    "composed_epsilon",
    "epsilon",
    "noise_for_epsilon",
]

FloatArray = npt.NDArray[np.float64]
_MIN_NOISE = 0.01  # below this no DP claim is meaningful; calibration stops here
_MAX_NOISE = 1e4


class _DroppedOrderFilter(logging.Filter):
    """Drops only the RDP accountant's "order excluded" notice (conservative, see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_compute_log_a_frac failed to converge")


_ABSL = logging.getLogger("absl")
_QUIET = _DroppedOrderFilter()
_QUIET_LOCK = threading.Lock()
_QUIET_DEPTH = 0


@contextlib.contextmanager
def _quiet_dropped_orders() -> Iterator[None]:
    """While dp_accounting computes, drop its "order excluded" notice (nothing at import)."""
    global _QUIET_DEPTH
    with _QUIET_LOCK:
        if _QUIET_DEPTH == 0:
            _ABSL.addFilter(_QUIET)
        _QUIET_DEPTH += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH -= 1
            if _QUIET_DEPTH == 0:
                _ABSL.removeFilter(_QUIET)


F = TypeVar("F", bound=Callable[..., Any])


def _quiet(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _quiet_dropped_orders():
            return fn(*args, **kwargs)

    return cast(F, wrapper)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_common(*, sample_rate: float, delta: float, accountant: str) -> None:
    _require(accountant in ACCOUNTANTS, f"accountant must be 'rdp' or 'pld', got {accountant!r}")
    _require(0 < sample_rate <= 1, f"the sample rate must be in (0, 1], got {sample_rate}")
    _require(0 < delta < 1, f"delta must be in (0, 1), got {delta}")


@dataclass(frozen=True, slots=True)
class GaussianRounds:
    """``rounds`` identical rounds of a Poisson-subsampled Gaussian mechanism.

    The record of what a job spent: a list of these composes exactly (see
    :func:`composed_epsilon`), which is how site budgets add up jobs.
    """

    noise_multiplier: float
    sample_rate: float
    rounds: int

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0,
            f"the noise multiplier must be a non-negative number, got {self.noise_multiplier}",
        )
        _require(
            0 < self.sample_rate <= 1, f"the sample rate must be in (0, 1], got {self.sample_rate}"
        )
        _require(self.rounds >= 0, f"rounds cannot be negative, got {self.rounds}")

    def event(self) -> dp_accounting.DpEvent:
        """The dp_accounting event of these rounds."""
        one: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sample_rate < 1:
            one = dp_accounting.PoissonSampledDpEvent(self.sample_rate, one)
        return dp_accounting.SelfComposedDpEvent(one, self.rounds)


def _make_accountant(kind: str) -> dp_accounting.PrivacyAccountant:
    if kind == "pld":
        return pld_privacy_accountant.PLDAccountant()
    return rdp_privacy_accountant.RdpAccountant()


@_quiet
def composed_epsilon(
    runs: Iterable[GaussianRounds], *, delta: float, accountant: str = "rdp"
) -> float:
    """ε at ``delta`` of all ``runs`` composed (adaptively, in any order).

    0.0 for no rounds; ``inf`` when any round ran without noise.
    """
    _check_common(sample_rate=1.0, delta=delta, accountant=accountant)
    runs = [r for r in runs if r.rounds > 0]
    if not runs:
        return 0.0
    if any(r.noise_multiplier == 0 for r in runs):
        return math.inf
    if accountant == "rdp":
        # RDP composes by adding RDP curves: each distinct round's curve is computed once by
        # the library and cached, so a per-round report stays cheap over thousands of rounds.
        orders, total = None, None
        for r in runs:
            orders, curve = _rdp_curve(r.noise_multiplier, r.sample_rate)
            total = curve * r.rounds if total is None else total + curve * r.rounds
        assert orders is not None and total is not None
        return float(rdp_privacy_accountant.compute_epsilon(orders, total, delta)[0])
    acc = _make_accountant(accountant)
    acc.compose(dp_accounting.ComposedDpEvent([r.event() for r in runs]))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=512)
def _rdp_curve(noise_multiplier: float, sample_rate: float) -> tuple[FloatArray, FloatArray]:
    """dp_accounting's RDP orders and the RDP of one round at each order (read-only)."""
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(GaussianRounds(noise_multiplier, sample_rate, 1).event())
    orders, curve = acc.orders, acc.rdp
    orders.setflags(write=False)
    curve.setflags(write=False)
    return orders, curve


def epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """ε at ``delta`` after ``rounds`` rounds of a Poisson-subsampled Gaussian mechanism."""
    _check_common(sample_rate=sample_rate, delta=delta, accountant=accountant)
    run = GaussianRounds(noise_multiplier=noise_multiplier, sample_rate=sample_rate, rounds=rounds)
    return composed_epsilon([run], delta=delta, accountant=accountant)


@_quiet
def noise_for_epsilon(
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    sample_rate: float,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier (within 1e-6) whose ε after ``rounds`` is ≤ the target.

    Calibrated by ``dp_accounting.mechanism_calibration`` (Brent's method on the accountant,
    with a final step that guarantees the returned σ does not exceed the target).
    """
    _check_common(sample_rate=sample_rate, delta=delta, accountant=accountant)
    _require(
        math.isfinite(target_epsilon) and target_epsilon > 0,
        f"the target epsilon must be a positive number, got {target_epsilon}",
    )
    _require(rounds >= 1, f"rounds must be at least 1, got {rounds}")

    def eps(sigma: float) -> float:
        return epsilon(
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            rounds=rounds,
            delta=delta,
            accountant=accountant,
        )

    low, high = 0.5, 1.0
    while eps(high) > target_epsilon:
        _require(
            high < _MAX_NOISE,
            f"ε={target_epsilon} at δ={delta} needs a noise multiplier above {_MAX_NOISE:g} "
            f"for {rounds} rounds; raise the target epsilon or lower the rounds",
        )
        low, high = high, high * 2
    while eps(low) <= target_epsilon:
        _require(
            low > _MIN_NOISE,
            f"ε={target_epsilon} at δ={delta} is met with a noise multiplier below "
            f"{_MIN_NOISE}, which protects nothing in practice; choose a smaller target epsilon",
        )
        low, high = low / 2, low
    sigma = mechanism_calibration.calibrate_dp_mechanism(
        lambda: _make_accountant(accountant),
        lambda s: GaussianRounds(
            noise_multiplier=s, sample_rate=sample_rate, rounds=rounds
        ).event(),
        target_epsilon,
        delta,
        bracket_interval=mechanism_calibration.ExplicitBracketInterval(low, high),
    )
    return float(sigma)


class PrivacyAccountant:
    """ε so far of a run, one round at a time (so the round driver can report it each round).

    >>> acc = PrivacyAccountant(noise_multiplier=1.0, sample_rate=1.0, delta=1e-5)
    >>> e1 = acc.step(); e2 = acc.step()
    >>> 0 < e1 < e2 == acc.epsilon and acc.rounds == 2
    True

    A round may use other parameters than the default ones (``step(noise_multiplier=...)``);
    consecutive rounds with the same parameters are kept as one :class:`GaussianRounds`.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        sample_rate: float,
        delta: float,
        accountant: str = "rdp",
    ) -> None:
        _check_common(sample_rate=sample_rate, delta=delta, accountant=accountant)
        GaussianRounds(noise_multiplier=noise_multiplier, sample_rate=sample_rate, rounds=0)
        self.noise_multiplier = noise_multiplier
        self.sample_rate = sample_rate
        self.delta = delta
        self.accountant = accountant
        self._runs: list[GaussianRounds] = []
        self._epsilon = 0.0

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(rounds={self.rounds}, epsilon={self._epsilon:.4g}, "
            f"delta={self.delta:g}, accountant={self.accountant!r})"
        )

    @property
    def runs(self) -> tuple[GaussianRounds, ...]:
        return tuple(self._runs)

    @property
    def rounds(self) -> int:
        return sum(r.rounds for r in self._runs)

    @property
    def epsilon(self) -> float:
        """ε at :attr:`delta` of all rounds so far (0.0 before the first)."""
        return self._epsilon

    def step(
        self,
        *,
        rounds: int = 1,
        noise_multiplier: float | None = None,
        sample_rate: float | None = None,
    ) -> float:
        """Account for ``rounds`` more rounds; returns ε after them."""
        sigma = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        q = self.sample_rate if sample_rate is None else sample_rate
        new = GaussianRounds(noise_multiplier=sigma, sample_rate=q, rounds=rounds)
        last = self._runs[-1] if self._runs else None
        if last is not None and (last.noise_multiplier, last.sample_rate) == (sigma, q):
            self._runs[-1] = GaussianRounds(
                noise_multiplier=sigma, sample_rate=q, rounds=last.rounds + rounds
            )
        else:
            self._runs.append(new)
        self._epsilon = composed_epsilon(self._runs, delta=self.delta, accountant=self.accountant)
        return self._epsilon
