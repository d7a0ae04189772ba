"""The parameters of one secure-aggregation round, checked before anything runs.

* ``threshold`` — shares needed to rebuild a site's secrets (t). Each site shares among its
  *share group*: its ``neighbours`` and itself, m = k + 1 sites. A float τ means
  t = ⌊τ·m⌋ + 1 (strictly more than the fraction τ of the group); an int is t itself. t must be
  a strict majority of the group: a coordinator that tells two halves of a group different
  survivor lists then cannot collect t shares of both kinds for one site, and each of c sites
  colluding with it is tolerated while t > (m + c)/2. Default 0.5: a group survives losing
  just under half its members.
* ``neighbours`` — the SecAgg+ degree k (``None``: the rule below; ≥ n − 1: complete graph, the
  protocol of Bonawitz et al.). An int ``threshold`` with ``neighbours=None`` means the complete
  graph. Default rule, the smallest even k for which
    - correctness: with each site dropping independently at rate δ = ``expected_dropout``,
      P[a share group keeps fewer than t members] ≤ 2^−20 / n (exact binomial tail), and
    - connectivity: n · ρ^(k/2) ≤ 2^−40 with ρ = max(δ, 1/3), so no run of k/2 consecutive
      sites on the ring (which would cut the Harary graph) is lost, dropped or colluding;
  falling back to the complete graph when no sparser graph qualifies (with δ = 0.3 and τ = 0.5
  that is every n below ~190).
* ``clip``, ``max_weight``, ``scale_bits``, ``modulus_bits`` — the fixed-point encoding (see
  :mod:`medfed.secagg.encoding`); ``scale_bits=None`` takes the most that fits the modulus.
  32-bit is the default: the masked vector is then as large as the float32 update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medfed.errors import ConfigError
from medfed.secagg.encoding import FixedPoint, fraction_bits
from medfed.secagg.graph import effective_degree

__all__ = ["SecAggConfig", "default_degree"]

_CORRECTNESS_BITS = 20
_SECURITY_BITS = 40
_LOSS_FLOOR = 1 / 3
_JSON_FIELDS = (
    "num_sites",
    "vector_length",
    "threshold",
    "neighbours",
    "clip",
    "max_weight",
    "scale_bits",
    "modulus_bits",
    "expected_dropout",
)


def _shares_needed(threshold: int | float, group: int) -> int:
    return threshold if isinstance(threshold, int) else math.floor(threshold * group) + 1


def _log_tail(group: int, survive: float, below: int) -> float:
    """log P[Binomial(group, survive) < below]."""
    if below <= 0:
        return -math.inf
    if survive >= 1.0:
        return -math.inf if below <= group else 0.0
    ls, ld = math.log(survive), math.log1p(-survive)
    terms = [
        math.lgamma(group + 1)
        - math.lgamma(i + 1)
        - math.lgamma(group - i + 1)
        + i * ls
        + (group - i) * ld
        for i in range(min(below, group + 1))
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(x - top) for x in terms))


def default_degree(num_sites: int, *, threshold: float, expected_dropout: float) -> int:
    """The SecAgg+ degree of the rule in the module docstring (n − 1: complete graph)."""
    n, full = num_sites, num_sites - 1
    lost = max(expected_dropout, _LOSS_FLOOR)

    def good(k: int) -> bool:
        degree = effective_degree(num_sites=n, degree=k)
        group = degree + 1
        below = _shares_needed(threshold, group)
        fail = _log_tail(group, 1.0 - expected_dropout, below) + math.log(n)
        cut = math.log(n) + (degree // 2) * math.log(lost)
        return fail <= -_CORRECTNESS_BITS * math.log(2) and cut <= -_SECURITY_BITS * math.log(2)

    if n <= 3 or not good(full - 1):
        return full
    lo, hi = 1, full - 1  # good(hi) holds; find the smallest good k by bisection
    while lo < hi:
        mid = (lo + hi) // 2
        if good(mid):
            hi = mid
        else:
            lo = mid + 1
    return effective_degree(num_sites=n, degree=lo)


def _fail(message: str) -> None:
    raise ConfigError(message)


@dataclass(frozen=True)
class SecAggConfig:
    """One round's secure-aggregation parameters (see the module docstring).

    ``threshold``, ``neighbours`` and ``scale_bits`` are resolved to ints on construction
    (``threshold`` to the number of shares t), so the resolved config is what is compared and
    sent to sites.

    >>> c = SecAggConfig(num_sites=10, vector_length=1000)
    >>> c.threshold, c.neighbours, c.scale_bits, c.modulus_bits
    (6, 9, 11, 32)
    """

    num_sites: int
    vector_length: int
    threshold: int | float = 0.5
    neighbours: int | None = None
    clip: float = 1.0
    max_weight: float = 65536.0
    scale_bits: int | None = None
    modulus_bits: int = 32
    expected_dropout: float = 0.3
    weight_bits: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.num_sites
        for name in ("num_sites", "vector_length", "modulus_bits"):
            if type(getattr(self, name)) is not int:
                _fail(f"{name} must be an int, got {getattr(self, name)!r}")
        if not 2 <= n <= 65535:
            _fail(f"secure aggregation takes 2 to 65535 sites (16-bit share points), got {n}")
        if self.vector_length < 1:
            _fail(f"vector_length must be at least 1, got {self.vector_length}")
        if self.modulus_bits not in (32, 64):
            _fail(f"modulus_bits must be 32 or 64, got {self.modulus_bits}")
        for name in ("clip", "max_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                _fail(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                _fail(f"{name} must be a positive finite number, got {value!r}")
        if not 0.0 <= self.expected_dropout < 1.0:
            _fail(f"expected_dropout must be in [0, 1), got {self.expected_dropout!r}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float):
            _fail(f"threshold must be an int (shares) or a float (fraction), got {t!r}")
        if isinstance(t, float) and not 0.5 <= t < 1.0:
            _fail(f"a fractional threshold must be in [0.5, 1), got {t}; use e.g. 0.5")
        k = self.neighbours
        if k is None:
            if isinstance(t, int):
                k = n - 1
            else:
                k = default_degree(n, threshold=t, expected_dropout=self.expected_dropout)
        elif type(k) is not int or k < 1:
            _fail(f"neighbours must be a positive int (or None for the default), got {k!r}")
        k = effective_degree(num_sites=n, degree=k)
        group = k + 1
        shares = _shares_needed(t, group)
        if not group < 2 * shares <= 2 * group:
            _fail(
                f"threshold {shares} is not a strict majority of the share group of {group} "
                f"sites (neighbours + 1); use between {group // 2 + 1} and {group}"
            )
        if self.scale_bits is not None and (
            type(self.scale_bits) is not int or self.scale_bits < 0
        ):
            _fail(f"scale_bits must be a non-negative int or None, got {self.scale_bits!r}")
        magnitude = float(self.max_weight) * float(self.clip)
        scale = fraction_bits(
            num_sites=n,
            magnitude=magnitude,
            modulus_bits=self.modulus_bits,
            requested=self.scale_bits,
        )
        weight_bits = fraction_bits(
            num_sites=n, magnitude=float(self.max_weight), modulus_bits=self.modulus_bits
        )
        object.__setattr__(self, "threshold", shares)
        object.__setattr__(self, "neighbours", k)
        object.__setattr__(self, "scale_bits", scale)
        object.__setattr__(self, "weight_bits", weight_bits)

    @property
    def shares_needed(self) -> int:
        """t, the number of shares that rebuild a secret."""
        assert isinstance(self.threshold, int)
        return self.threshold

    @property
    def degree(self) -> int:
        """k, each site's number of neighbours (n − 1: complete graph)."""
        assert self.neighbours is not None
        return self.neighbours

    @property
    def codec(self) -> FixedPoint:
        """The fixed-point encoding of this configuration."""
        assert self.scale_bits is not None
        return FixedPoint(
            length=self.vector_length,
            clip=float(self.clip),
            max_weight=float(self.max_weight),
            scale_bits=self.scale_bits,
            weight_bits=self.weight_bits,
            modulus_bits=self.modulus_bits,
        )

    def to_json(self) -> dict[str, Any]:
        """The resolved parameters as a JSON-safe dict (``from_json`` gives an equal config)."""
        return {name: getattr(self, name) for name in _JSON_FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SecAggConfig:
        if not isinstance(data, dict) or set(data) != set(_JSON_FIELDS):
            raise ConfigError(f"a secure-aggregation config has exactly the keys {_JSON_FIELDS}")
        return cls(**data)
