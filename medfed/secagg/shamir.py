"""Shamir t-of-n secret sharing of byte strings over the prime field GF(2^521 − 1).

A secret (a 32-byte mask seed or X25519 secret key; any length works) is cut into chunks of
65 bytes; each chunk is an integer below 2^520 < p = 2^521 − 1 (a Mersenne prime) and is the
constant term of its own random polynomial of degree t − 1 with coefficients drawn uniformly
from the field (``secrets``). The share of holder ``x`` (an integer 1 ≤ x < 2^16) is the list of
the polynomials' values at ``x``. Any t shares give the polynomials back (Lagrange
interpolation at 0); t − 1 shares are uniformly distributed whatever the secret is, so they say
nothing about it — combining them yields an unrelated value.

Wire form of a share: ``x`` (2 bytes) ‖ secret length (2 bytes) ‖ one 66-byte big-endian field
element per chunk, so a 32-byte secret has 70-byte shares.

>>> shares = split(b"a secret of any length", threshold=3, xs=[1, 2, 3, 4, 5])
>>> combine(shares[1:4]), combine(shares[:2]) == b"a secret of any length"
(b'a secret of any length', False)
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["PRIME", "Share", "combine", "share_size", "split"]

PRIME = 2**521 - 1
_CHUNK = 65  # bytes per field element of secret: 2^520 < PRIME
_ELEMENT = 66  # bytes to write one field element
_MAX_X = 2**16 - 1


@dataclass(frozen=True, slots=True)
class Share:
    """One holder's share: the evaluation point ``x`` and one field element per chunk."""

    x: int
    values: tuple[int, ...]
    length: int

    def to_bytes(self) -> bytes:
        head = self.x.to_bytes(2, "big") + self.length.to_bytes(2, "big")
        return head + b"".join(v.to_bytes(_ELEMENT, "big") for v in self.values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse a share; raise ValueError when it is not a well-formed share."""
        if len(data) < 4:
            raise ValueError("a share is at least 4 bytes long")
        x, length = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
        if len(data) != share_size(length):
            raise ValueError(f"a share of a {length}-byte secret is {share_size(length)} bytes")
        values = tuple(
            int.from_bytes(data[i : i + _ELEMENT], "big") for i in range(4, len(data), _ELEMENT)
        )
        if x == 0 or any(v >= PRIME for v in values):
            raise ValueError("a share holds a value outside the field")
        return cls(x, values, length)


def share_size(secret_length: int) -> int:
    """Bytes of one share of a secret of ``secret_length`` bytes."""
    return 4 + _ELEMENT * _chunks(secret_length)


def _chunks(length: int) -> int:
    return max(1, -(-length // _CHUNK))


def split(secret: bytes, *, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares of ``secret`` for the holders at points ``xs`` (distinct, 1 ≤ x < 2^16); any
    ``threshold`` of them rebuild it, fewer reveal nothing."""
    if not 0 < len(secret) < 2**16:
        raise ValueError("a secret is between 1 and 65535 bytes long")
    if len(set(xs)) != len(xs) or any(not 0 < x <= _MAX_X for x in xs):
        raise ValueError("share points must be distinct integers between 1 and 65535")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be between 1 and {len(xs)} (the number of shares)")
    polys = []
    for i in range(_chunks(len(secret))):
        constant = int.from_bytes(secret[i * _CHUNK : (i + 1) * _CHUNK], "big")
        polys.append([constant, *(secrets.randbelow(PRIME) for _ in range(threshold - 1))])
    return [Share(x, tuple(_evaluate(p, x) for p in polys), len(secret)) for x in xs]


def _evaluate(coefficients: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coefficients):  # Horner
        acc = (acc * x + c) % PRIME
    return acc


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def combine(shares: Sequence[Share]) -> bytes:
    """The secret that the polynomial through all ``shares`` hides. With at least the
    threshold of shares this is the secret; with fewer it is an unrelated value."""
    if not shares:
        raise ValueError("combine needs at least one share")
    length = shares[0].length
    xs = tuple(s.x for s in shares)
    if len(set(xs)) != len(xs):
        raise ValueError("the shares to combine come from distinct holders")
    if any(s.length != length or len(s.values) != _chunks(length) for s in shares):
        raise ValueError("the shares to combine are of secrets of different lengths")
    weights = _lagrange_at_zero(xs)
    out = bytearray()
    for k in range(_chunks(length)):
        value = sum(w * s.values[k] for w, s in zip(weights, shares, strict=True)) % PRIME
        size = min(_CHUNK, length - k * _CHUNK)
        # with fewer shares than the threshold the value is arbitrary: keep its low bytes
        out += (value % 256**size).to_bytes(size, "big")
    return bytes(out)
