"""Splitting one pool of records into sites, and each site into training and test records.

Pure numpy. Every helper takes an explicit :class:`numpy.random.Generator`, so a split is
reproduced exactly by reseeding; numbers that could be swapped are keyword-only. Invalid
arguments raise :class:`ValueError` (a programming error: the loaders check user input and
raise :class:`medfed.errors.DataError` before they get here).

Two ways to skew labels, with the same meaning of ``alpha``:

- :func:`dirichlet_label_split` splits an existing pool: for each class, the shares of
  that class going to each site are drawn from ``Dirichlet(alpha, ..., alpha)``
  (Yurochkin et al. 2019; Wang et al. 2020; "Dirichlet partitioning" in Flower).
- :func:`dirichlet_class_mix` gives each site's class mix for a *generator*: the mix that
  the split above produces at one site when there are many sites,
  ``q_k ∝ prior ⊙ g_k`` with ``g_k ~ Dirichlet(alpha, ..., alpha)``.

In both, ``alpha → ∞`` is IID (every site has the consortium's class mix), ``alpha = 1`` is
a moderate skew, and ``alpha → 0`` gives sites that hold mostly one class.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "dirichlet_class_mix",
    "dirichlet_label_split",
    "quantile_strata",
    "skewed_sizes",
    "train_test_indices",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _check_alpha(alpha: float) -> None:
    if not alpha > 0:  # also rejects NaN
        raise ValueError(f"alpha must be positive (math.inf for IID), got {alpha}")


def _check_num_sites(num_sites: int) -> None:
    if num_sites < 1:
        raise ValueError(f"num_sites must be at least 1, got {num_sites}")


def _permutation(rng: np.random.Generator, n: int) -> IntArray:
    """A random permutation from uniform draws only (stable across numpy versions)."""
    return np.argsort(rng.random(n), kind="stable").astype(np.int64)


def _spread(total: int, weights: FloatArray, *, cap: IntArray | None = None) -> IntArray:
    """Integer counts summing to ``total``, proportional to ``weights`` (largest remainder).

    Ties in the remainders go to the lower index, so the result is deterministic. With
    ``cap``, no count exceeds its cap (``total`` must not exceed ``cap.sum()``).
    """
    ideal = total * weights / weights.sum()
    counts = np.floor(ideal).astype(np.int64)
    if cap is not None:
        counts = np.minimum(counts, cap)
    order = np.argsort(-(ideal - counts), kind="stable")
    missing = total - int(counts.sum())
    while missing > 0:
        for i in order:
            if missing == 0:
                break
            if cap is None or counts[i] < cap[i]:
                counts[i] += 1
                missing -= 1
    return np.asarray(counts, dtype=np.int64)


def skewed_sizes(
    total: int,
    *,
    num_sites: int,
    skew: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> IntArray:
    """Site sizes that sum to ``total``, from equal (``skew = 0``) to very unequal.

    Each site first gets ``min_size`` records; the rest is shared in proportion to
    ``exp(skew * z_k)`` with ``z_k ~ N(0, 1)``: the log of a site's share is normal with
    standard deviation ``skew``. ``skew = 0.5`` typically (median) makes the largest of 5
    sites 3 times the smallest; ``skew = 1`` 9 times; ``skew = 1.5`` 27 times.

    >>> skewed_sizes(10, num_sites=3, skew=0.0, rng=np.random.default_rng(0)).tolist()
    [4, 3, 3]
    """
    _check_num_sites(num_sites)
    if skew < 0 or math.isnan(skew):
        raise ValueError(f"skew must be >= 0, got {skew}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if total < num_sites * min_size:
        raise ValueError(f"{total} records cannot give {num_sites} sites at least {min_size} each")
    z = rng.standard_normal(num_sites)
    weights = np.exp(skew * (z - z.max()))  # shifted so the largest weight is 1: no overflow
    rest = _spread(total - num_sites * min_size, weights)
    return rest + min_size


def dirichlet_label_split(
    labels: npt.ArrayLike,
    *,
    num_sites: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> list[IntArray]:
    """Split record indices ``0..n-1`` into ``num_sites`` sites with Dirichlet label skew.

    For each class, its (shuffled) records are cut into consecutive runs whose shares are
    drawn from ``Dirichlet(alpha * ones(num_sites))``; ``alpha = math.inf`` gives every site
    an equal share of every class. Sites therefore differ in both class mix and size.

    A site left with fewer than ``min_size`` records then receives random records, one at
    a time, from the site that currently holds the most, so every site ends with at least
    ``min_size``. This repair slightly weakens the skew for very small ``alpha``.

    Returns one sorted index array per site; together they are disjoint and cover
    ``0..n-1``.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    _check_num_sites(num_sites)
    _check_alpha(alpha)
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    n = len(y)
    if n < num_sites * min_size:
        raise ValueError(f"{n} records cannot give {num_sites} sites at least {min_size} each")

    parts: list[list[IntArray]] = [[] for _ in range(num_sites)]
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        members = members[_permutation(rng, len(members))]
        if math.isinf(alpha):
            shares = np.full(num_sites, 1.0 / num_sites)
        else:
            shares = rng.dirichlet(np.full(num_sites, alpha))
        counts = _spread(len(members), shares)
        for site, chunk in enumerate(np.split(members, np.cumsum(counts)[:-1])):
            parts[site].append(chunk)
    sites = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]

    sizes = np.array([len(s) for s in sites])
    while sizes.min() < min_size:
        short, donor = int(np.argmin(sizes)), int(np.argmax(sizes))
        pick = int(rng.integers(sizes[donor]))
        sites[short] = np.append(sites[short], sites[donor][pick])
        sites[donor] = np.delete(sites[donor], pick)
        sizes[short] += 1
        sizes[donor] -= 1
    return [np.sort(s).astype(np.int64) for s in sites]


def dirichlet_class_mix(
    prior: npt.ArrayLike,
    *,
    num_sites: int,
    alpha: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Each site's class mix, for generators that draw a site's records class by class.

    Site ``k`` gets ``q_k ∝ prior_k ⊙ g_k`` with ``g_k ~ Dirichlet(alpha * ones(K))``: its
    class odds relative to ``prior_k`` are multiplied by ratios of independent
    ``Gamma(alpha)`` draws, which is what :func:`dirichlet_label_split` gives one site of
    many. With ``alpha = 1`` and a 15 % prior, half of the sites fall between about 6 %
    and 35 %; with ``alpha = 5``, between about 10 % and 21 %.

    ``prior`` is one class mix for all sites, shape ``(K,)``, or one per site,
    ``(num_sites, K)`` (for example each site's natural mix). Returns a ``(num_sites, K)``
    array whose rows sum to 1; ``alpha = math.inf`` returns the (normalised) priors.
    """
    p = np.asarray(prior, dtype=np.float64)
    _check_num_sites(num_sites)
    if p.ndim == 1:
        p = np.tile(p, (num_sites, 1))
    if p.ndim != 2 or p.shape[0] != num_sites or p.shape[1] < 2:
        raise ValueError(
            f"prior must have shape (K,) or ({num_sites}, K) with K >= 2, got {p.shape}"
        )
    if np.any(p <= 0) or not np.isfinite(p).all():
        raise ValueError("prior must hold positive, finite numbers")
    _check_alpha(alpha)
    p = p / p.sum(axis=1, keepdims=True)
    if math.isinf(alpha):
        return np.asarray(p, dtype=np.float64)
    g = rng.dirichlet(np.full(p.shape[1], alpha), size=num_sites)
    q = p * g
    # g sums to 1, so some component is >= 1/K and each row sum is > 0 whatever alpha is.
    return np.asarray(q / q.sum(axis=1, keepdims=True), dtype=np.float64)


def train_test_indices(
    n: int,
    *,
    test_fraction: float,
    rng: np.random.Generator,
    labels: npt.ArrayLike | None = None,
) -> tuple[IntArray, IntArray]:
    """Hold out about ``test_fraction`` of ``n`` records, stratified by ``labels`` if given.

    The test set has ``round(n * test_fraction)`` records, but never fewer than 1 nor more
    than ``n - 1``, so both parts are non-empty (``n`` must be at least 2).

    With labels, each class contributes in proportion to its size (largest remainder: a
    class of 8 with ``test_fraction = 0.25`` gives exactly 2), except that a class with at
    least 2 records puts at least 1 in each part whenever the test size allows it, so a
    small site's test set is not left without its rare class.

    Only uniform draws are used, so a fixed seed gives the same split on every numpy
    version. Returns sorted ``(train, test)`` index arrays, disjoint and covering
    ``0..n-1``.
    """
    if n < 2:
        raise ValueError(
            f"a site needs at least 2 records to have a train and a test part, got {n}"
        )
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    if labels is None:
        test = _permutation(rng, n)[:n_test]
    else:
        y = np.asarray(labels)
        if y.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {y.shape}")
        _, inverse = np.unique(y, return_inverse=True)
        counts = np.bincount(inverse).astype(np.int64)
        per_class = _stratum_sizes(counts, n_test, rng)
        parts = []
        for c, k in enumerate(per_class):
            members = np.flatnonzero(inverse == c)
            parts.append(members[_permutation(rng, len(members))[:k]])
        test = np.concatenate(parts)
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def _stratum_sizes(counts: IntArray, n_test: int, rng: np.random.Generator) -> IntArray:
    """How many test records each class gives: proportional, then both parts kept non-empty."""
    # A random class order breaks ties between equal remainders without favouring class 0.
    order = _permutation(rng, len(counts))
    per_class = np.empty(len(counts), np.int64)
    per_class[order] = _spread(n_test, counts[order].astype(np.float64), cap=counts[order])
    low = (counts >= 2).astype(np.int64)
    high = np.where(counts >= 2, counts - 1, counts)
    if not low.sum() <= n_test <= high.sum():
        return per_class
    ideal = n_test * counts / counts.sum()
    per_class = np.clip(per_class, low, high)
    while per_class.sum() < n_test:  # give to the class furthest below its ideal share
        room = np.where(per_class < high, ideal - per_class, -np.inf)
        per_class[order[np.argmax(room[order])]] += 1
    while per_class.sum() > n_test:  # take from the class furthest above it
        excess = np.where(per_class > low, per_class - ideal, -np.inf)
        per_class[order[np.argmax(excess[order])]] -= 1
    return per_class


def quantile_strata(values: npt.ArrayLike, *, bins: int = 4) -> IntArray:
    """Each value's quantile bin ``0..bins-1``: strata for a continuous target.

    :func:`train_test_indices` stratifies by class; a regression target has (almost) no two
    equal values, so it is stratified by its quantile bin instead, and every test set spans
    the target's range. Ties stay in one bin; NaN is refused.

    >>> quantile_strata([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 8.0, 7.0], bins=4).tolist()
    [2, 0, 1, 0, 1, 2, 3, 3]
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if np.isnan(v).any():
        raise ValueError("the values to stratify hold NaN")
    if v.size == 0:
        return np.empty(0, np.int64)
    edges = np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.searchsorted(edges, v, side="right").astype(np.int64)
