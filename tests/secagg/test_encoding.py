from __future__ import annotations

import numpy as np
import pytest

from medfed.errors import ConfigError
from medfed.secagg import EncodingError, SecAggConfig
from medfed.secagg.encoding import FixedPoint, fraction_bits, max_code


def _sum(codec: FixedPoint, items) -> np.ndarray:
    total = np.zeros(codec.length + 1, codec.dtype)
    for values, weight in items:
        total += codec.encode(values, weight)  # wraps modulo 2^b like the protocol
    return total.astype(np.uint64)


@pytest.mark.parametrize("bits", [32, 64])
def test_decoded_sum_is_within_the_quantisation_bound(bits: int) -> None:
    rng = np.random.default_rng(1)
    codec = SecAggConfig(num_sites=8, vector_length=5000, modulus_bits=bits).codec
    items = [(rng.uniform(-1, 1, 5000), float(rng.integers(1, 3000))) for _ in range(8)]
    weighted, total = codec.decode_sum(_sum(codec, items))
    exact = sum(w * v for v, w in items)
    assert total == sum(w for _, w in items)  # integer weights come back exactly
    error = np.abs(weighted - exact).max()
    assert error <= codec.error_bound(8)
    assert error > 0 or bits == 64


def test_ten_plus_sites_with_the_largest_weights_do_not_overflow() -> None:
    n = 12
    config = SecAggConfig(num_sites=n, vector_length=4, max_weight=100_000, clip=2.0)
    codec = config.codec
    for sign in (1.0, -1.0):
        values = np.full(4, sign * 2.0)  # every site at +clip (or −clip) with the largest weight
        weighted, total = codec.decode_sum(_sum(codec, [(values, 100_000.0)] * n))
        np.testing.assert_allclose(weighted, sign * 2.0 * 100_000 * n, atol=codec.error_bound(n))
        assert total == 100_000.0 * n


def test_the_budget_takes_the_most_fraction_bits_that_fit() -> None:
    s = fraction_bits(num_sites=50, magnitude=65536.0, modulus_bits=32)
    assert 50 * max_code(65536.0, bits=s) < 2**31
    assert 50 * max_code(65536.0, bits=s + 1) >= 2**31


def test_a_config_that_would_overflow_is_refused_with_the_numbers() -> None:
    with pytest.raises(ConfigError, match=r"100 sites × 1e\+09 .* does not fit a signed 32-bit"):
        SecAggConfig(num_sites=100, vector_length=3, max_weight=1e9)
    with pytest.raises(ConfigError, match=r"2\^20 \(scale_bits\).*lower scale_bits"):
        SecAggConfig(num_sites=20, vector_length=3, max_weight=1000, scale_bits=20)
    with pytest.raises(ConfigError, match="2\\^53 per site"):
        SecAggConfig(num_sites=2, vector_length=3, modulus_bits=64, scale_bits=60)
    # the same numbers fit a 64-bit modulus
    assert SecAggConfig(num_sites=100, vector_length=3, max_weight=1e9, modulus_bits=64)


@pytest.mark.parametrize(
    ("values", "weight", "match"),
    [
        (np.array([0.5, 1.5, 0.0]), 1.0, "exceeds the clip"),
        (np.array([0.5, np.nan, 0.0]), 1.0, "exceeds the clip"),
        (np.array([0.5, -np.inf, 0.0]), 1.0, "exceeds the clip"),
        (np.array([0.5, 0.5]), 1.0, "3 values"),
        (np.array([1, 0, 0]), 1.0, "float vector"),
        (np.array([0.5, 0.5, 0.5]), 70_000.0, "outside"),
        (np.array([0.5, 0.5, 0.5]), -1.0, "outside"),
        (np.array([0.5, 0.5, 0.5]), float("nan"), "outside"),
    ],
)
def test_inputs_that_do_not_fit_are_refused(values, weight, match) -> None:
    codec = SecAggConfig(num_sites=3, vector_length=3).codec
    with pytest.raises(EncodingError, match=match):
        codec.encode(values, weight)


def test_encoding_wraps_negative_values_and_appends_the_weight() -> None:
    codec = SecAggConfig(num_sites=3, vector_length=2, scale_bits=4).codec
    out = codec.encode(np.array([-0.5, 0.25], np.float32), 2.0)
    assert out.dtype == np.dtype("<u4")
    assert out.tolist() == [2**32 - 16, 8, 2 * 2**codec.weight_bits]


def test_decode_refuses_a_vector_of_the_wrong_shape() -> None:
    codec = SecAggConfig(num_sites=3, vector_length=2).codec
    with pytest.raises(EncodingError):
        codec.decode_sum(np.zeros(2, np.uint64))
