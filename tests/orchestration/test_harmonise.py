"""Harmonisation learnt federatedly equals pooled standardisation; ComBat removes site shifts."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.config import DataConfig
from medfed.data import load_dataset
from medfed.data.statistics.table import feature_names
from medfed.orchestration.backends.inprocess import InProcessBackend
from medfed.orchestration.harmonise import combat_site, learn_harmonisation
from medfed.orchestration.secure_round import SecureAggregation
from medfed.orchestration.statistics import StatsSites

EHR = DataConfig(name="synthetic-ehr", options={"standardize": False})


def _setup(secure: bool) -> tuple[InProcessBackend, SecureAggregation | None, object]:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from medfed.secagg import ed25519_verifier

    d = load_dataset(EHR.name, seed=0, options=EHR.options)
    factory = StatsSites(data=EHR, seed=0, names=d.site_names)
    agg = None
    if secure:
        factory.keys = {
            s: ed25519.Ed25519PrivateKey.generate().private_bytes_raw() for s in d.site_names
        }
        pub = {
            s: ed25519.Ed25519PrivateKey.from_private_bytes(k).public_key()
            for s, k in factory.keys.items()
        }
        agg = SecureAggregation(verify_identity=ed25519_verifier(pub))
    return InProcessBackend(factory), agg, d


@pytest.mark.parametrize("secure", [False, True])
def test_federated_standardisation_equals_the_pooled_one(secure: bool) -> None:
    backend, agg, d = _setup(secure)
    h = learn_harmonisation(backend, "standardise", features=feature_names(d.spec), secure=agg)
    pooled = np.concatenate([s.x_train for s in d.sites]).astype(np.float64)
    np.testing.assert_allclose(h.mean, pooled.mean(0), rtol=1e-9)
    np.testing.assert_allclose(h.sd, pooled.std(0, ddof=1), rtol=1e-9)
    z = np.concatenate([h.apply(s).x_train for s in d.sites]).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0, ddof=1), 1, atol=1e-5)


def test_combat_uses_the_within_site_variance_and_shrinks_site_shifts() -> None:
    backend, _, d = _setup(False)
    h = learn_harmonisation(backend, "combat", features=feature_names(d.spec))
    xs = [s.x_train.astype(np.float64) for s in d.sites]
    within = sum(((x - x.mean(0)) ** 2).sum(0) for x in xs)
    n = sum(s.num_train for s in d.sites)
    np.testing.assert_allclose(h.sd, np.sqrt(within / n), rtol=1e-9)
    for s in d.sites:
        x = h.apply(s).x_train
        assert np.all(np.abs(x.mean(0)) < 0.05)  # each site's location removed
    rng = np.random.default_rng(0)
    z = rng.normal(0.3, 1.5, (400, 12))
    gamma, delta2 = combat_site(z)
    assert np.all(np.abs(gamma - 0.3) < 0.25) and np.all(np.abs(np.sqrt(delta2) - 1.5) < 0.3)
    # shrinkage: the EB estimates lie between the per-feature estimates and their mean
    g_hat = z.mean(0)
    assert np.all(np.abs(gamma - g_hat.mean()) <= np.abs(g_hat - g_hat.mean()) + 1e-12)
