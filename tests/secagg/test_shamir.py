from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from medfed.secagg.shamir import PRIME, Share, combine, share_size, split


@st.composite
def sharings(draw):
    secret = draw(
        st.one_of(st.binary(min_size=1, max_size=15), st.binary(min_size=16, max_size=140))
    )
    n = draw(st.integers(2, 9))
    t = draw(st.integers(2, n))
    xs = draw(st.lists(st.integers(1, 2**16 - 1), min_size=n, max_size=n, unique=True))
    order = draw(st.permutations(range(n)))
    return secret, t, xs, order


@settings(max_examples=60, deadline=None)
@given(sharings())
def test_any_t_shares_rebuild_and_t_minus_one_do_not(case) -> None:
    secret, t, xs, order = case
    shares = split(secret, threshold=t, xs=xs)
    chosen = [shares[i] for i in order]
    assert combine(chosen[:t]) == secret
    assert combine(chosen) == secret  # more than t also works
    # t − 1 shares: the polynomial through them is another one; the result is unrelated. A short
    # secret is matched by chance (1 in 256 for one byte), so the check needs 16 bytes (2^-128)
    if len(secret) >= 16:
        assert combine(chosen[: t - 1]) != secret


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_t_minus_one_shares_are_consistent_with_any_secret(a: bytes, b: bytes) -> None:
    """Fewer than t shares reveal nothing: for any other secret there is a polynomial of the
    same degree through the very same t − 1 shares (so both secrets are equally likely)."""
    t, xs = 3, [1, 2, 3, 4]
    shares = split(a, threshold=t, xs=xs)[: t - 1]
    # the point (0, b) and the t − 1 shares fix a degree t − 1 polynomial: evaluate it at x = 3
    s_b = int.from_bytes(b, "big")
    pts = [(0, s_b), *((s.x, s.values[0]) for s in shares)]

    def at(x: int) -> int:
        total = 0
        for i, (xi, yi) in enumerate(pts):
            num = den = 1
            for j, (xj, _) in enumerate(pts):
                if j != i:
                    num, den = num * (x - xj) % PRIME, den * (xi - xj) % PRIME
            total += yi * num * pow(den, -1, PRIME)
        return total % PRIME

    fake = Share(3, (at(3),), 32)
    assert combine([*shares, fake]) == b


def test_share_bytes_round_trip_and_sizes() -> None:
    shares = split(bytes(range(32)), threshold=2, xs=[7, 9])
    raw = shares[0].to_bytes()
    assert len(raw) == share_size(32) == 70
    assert Share.from_bytes(raw) == shares[0]
    assert len(split(bytes(100), threshold=2, xs=[1, 2])[0].to_bytes()) == share_size(100) == 136


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00\x01", b"\x00\x01\x00\x20" + bytes(65), b"\x00\x00\x00\x20" + bytes(66)],
)
def test_malformed_share_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Share.from_bytes(raw)


def test_value_outside_the_field_is_refused() -> None:
    raw = (1).to_bytes(2, "big") + (32).to_bytes(2, "big") + PRIME.to_bytes(66, "big")
    with pytest.raises(ValueError, match="outside the field"):
        Share.from_bytes(raw)


def test_bad_split_and_combine_arguments() -> None:
    with pytest.raises(ValueError, match="distinct"):
        split(b"x", threshold=2, xs=[1, 1, 2])
    with pytest.raises(ValueError, match="threshold"):
        split(b"x", threshold=4, xs=[1, 2, 3])
    with pytest.raises(ValueError, match="between 1 and 65535"):
        split(b"x", threshold=1, xs=[0, 1])
    with pytest.raises(ValueError):
        split(b"", threshold=1, xs=[1])
    a = split(b"x" * 32, threshold=2, xs=[1, 2])
    with pytest.raises(ValueError, match="distinct holders"):
        combine([a[0], a[0]])
    with pytest.raises(ValueError, match="different lengths"):
        combine([a[0], split(b"y" * 70, threshold=2, xs=[1, 2])[1]])
    with pytest.raises(ValueError):
        combine([])
