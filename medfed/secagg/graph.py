"""The SecAgg+ neighbour graph: who masks with whom and who holds whose shares.

Bell et al. (2020) replace the complete graph of Bonawitz et al. (2017) with a sparse random
graph of degree k = O(log n): each site agrees pairwise masks with, and shares its secrets
among, its k neighbours only, so a site's work grows with k instead of n. Here the graph is a
Harary graph on a random ring order: the sites are sorted by ``SHA-256(seed ‖ name)`` (a public
seed, so every participant computes the same graph), and each one is joined to the k/2 sites on
either side of it on that ring (plus the opposite site when k is odd and n even). The result is
k-regular and k-connected. With k ≥ n − 1 it is the complete graph, i.e. the original protocol.

>>> g = neighbour_graph(["a", "b", "c", "d"], seed=b"public seed", degree=3)
>>> sorted(g["a"])
['b', 'c', 'd']
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes

__all__ = ["effective_degree", "neighbour_graph", "ring_order"]


def ring_order(sites: Sequence[str], seed: bytes) -> list[str]:
    """The sites in the pseudo-random ring order given by ``seed``."""

    def key(site: str) -> bytes:
        raw = site.encode()
        digest = hashes.Hash(hashes.SHA256())
        digest.update(len(seed).to_bytes(4, "big") + seed + raw)
        return digest.finalize() + raw

    return sorted(sites, key=key)


def neighbour_graph(sites: Sequence[str], *, seed: bytes, degree: int) -> dict[str, frozenset[str]]:
    """Each site's neighbours (never itself) in the degree-``degree`` graph of ``seed``.

    Every site has exactly ``degree`` neighbours, except that an odd degree on an odd number of
    sites (no such regular graph exists) is raised by one; ``degree ≥ n − 1`` gives the
    complete graph.
    """
    n = len(sites)
    if len(set(sites)) != n:
        raise ValueError("site names in a neighbour graph must be distinct")
    if degree < 1:
        raise ValueError("the degree of a neighbour graph is at least 1")
    if degree >= n - 1:
        everyone = frozenset(sites)
        return {s: everyone - {s} for s in sites}
    ring = ring_order(sites, seed)
    half = (degree + 1) // 2 if n % 2 else degree // 2
    opposite = degree % 2 == 1 and n % 2 == 0
    graph: dict[str, frozenset[str]] = {}
    for i, site in enumerate(ring):
        near = {ring[(i + d) % n] for d in range(1, half + 1)}
        near |= {ring[(i - d) % n] for d in range(1, half + 1)}
        if opposite:
            near.add(ring[(i + n // 2) % n])
        graph[site] = frozenset(near)
    return graph


def effective_degree(*, num_sites: int, degree: int) -> int:
    """The degree :func:`neighbour_graph` really gives ``num_sites`` sites for ``degree``."""
    if degree >= num_sites - 1:
        return num_sites - 1
    if degree % 2 and num_sites % 2:
        return degree + 1
    return degree
