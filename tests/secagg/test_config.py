from __future__ import annotations

import math

import pytest

from medfed.errors import ConfigError
from medfed.secagg import SecAggConfig, default_degree
from medfed.secagg.config import _log_tail


def test_defaults_resolve_to_plain_numbers() -> None:
    c = SecAggConfig(num_sites=10, vector_length=100)
    assert (c.threshold, c.neighbours, c.modulus_bits) == (6, 9, 32)  # complete graph, majority
    assert c.shares_needed == 6 and c.degree == 9
    assert isinstance(c.scale_bits, int) and c.scale_bits > 0
    assert SecAggConfig.from_json(c.to_json()) == c
    assert SecAggConfig(num_sites=10, vector_length=100, threshold=0.65).threshold == 7


def test_an_int_threshold_means_the_complete_graph_unless_neighbours_are_given() -> None:
    assert SecAggConfig(num_sites=300, vector_length=1, threshold=151).neighbours == 299
    c = SecAggConfig(num_sites=300, vector_length=1, threshold=5, neighbours=8)
    assert (c.threshold, c.neighbours) == (5, 8)


def test_the_default_degree_is_sparse_for_many_sites_and_meets_its_rule() -> None:
    assert default_degree(100, threshold=0.5, expected_dropout=0.3) == 99
    k = default_degree(5000, threshold=0.5, expected_dropout=0.3)
    assert k % 2 == 0 and 150 < k < 400
    group = k + 1
    t = group // 2 + 1
    tail = _log_tail(group, 0.7, t) + math.log(5000)
    assert tail <= -20 * math.log(2)
    smaller = k - 2
    assert _log_tail(smaller + 1, 0.7, (smaller + 1) // 2 + 1) + math.log(5000) > tail
    # an odd degree on an odd number of sites is raised to the next even one
    assert SecAggConfig(num_sites=11, vector_length=1, threshold=4, neighbours=5).neighbours == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_sites": 1}, "2 to 65535 sites"),
        ({"num_sites": 70_000}, "2 to 65535 sites"),
        ({"vector_length": 0}, "vector_length"),
        ({"threshold": 3}, "not a strict majority .* use between 6 and 10"),
        ({"threshold": 11}, "not a strict majority"),
        ({"threshold": 0.3}, r"in \[0.5, 1\)"),
        ({"threshold": 1.0}, r"in \[0.5, 1\)"),
        ({"threshold": True}, "threshold must be"),
        ({"neighbours": 0}, "neighbours must be"),
        ({"modulus_bits": 16}, "32 or 64"),
        ({"clip": 0.0}, "clip must be a positive"),
        ({"max_weight": float("inf")}, "max_weight must be a positive"),
        ({"expected_dropout": 1.0}, "expected_dropout"),
        ({"scale_bits": -1}, "scale_bits"),
    ],
)
def test_bad_configs_are_refused_with_what_to_change(kwargs, match) -> None:
    args = {"num_sites": 10, "vector_length": 10, **kwargs}
    with pytest.raises(ConfigError, match=match):
        SecAggConfig(**args)


def test_from_json_refuses_unknown_keys() -> None:
    data = SecAggConfig(num_sites=4, vector_length=2).to_json()
    with pytest.raises(ConfigError):
        SecAggConfig.from_json({**data, "extra": 1})
