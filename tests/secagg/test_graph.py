from __future__ import annotations

import pytest

from medfed.secagg.graph import effective_degree, neighbour_graph


@pytest.mark.parametrize(("n", "k"), [(10, 4), (11, 4), (12, 5), (30, 6), (31, 7)])
def test_graph_is_regular_symmetric_and_deterministic(n: int, k: int) -> None:
    sites = [f"site-{i}" for i in range(n)]
    g = neighbour_graph(sites, seed=b"s" * 32, degree=k)
    degree = effective_degree(num_sites=n, degree=k)
    assert degree == (k + 1 if k % 2 and n % 2 else k)
    for s, near in g.items():
        assert s not in near and len(near) == degree
        assert all(s in g[v] for v in near)
    assert neighbour_graph(list(reversed(sites)), seed=b"s" * 32, degree=k) == g
    assert neighbour_graph(sites, seed=b"t" * 32, degree=k) != g


def test_degree_n_minus_one_or_more_is_the_complete_graph() -> None:
    sites = ["a", "b", "c", "d", "e"]
    for k in (4, 9):
        g = neighbour_graph(sites, seed=b"x" * 16, degree=k)
        assert all(g[s] == set(sites) - {s} for s in sites)


def test_graph_refuses_repeated_names_and_zero_degree() -> None:
    with pytest.raises(ValueError):
        neighbour_graph(["a", "a", "b"], seed=b"x", degree=1)
    with pytest.raises(ValueError):
        neighbour_graph(["a", "b", "c"], seed=b"x", degree=0)
