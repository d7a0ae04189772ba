from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from scipy import stats

from medfed.secagg import MaskedInput, ProtocolViolation, Stage
from medfed.secagg.masking import MaskStream, agree, open_sealed, public_bytes, seal

from . import Harness


def test_prg_is_deterministic_per_key_and_adds_and_subtracts_exactly() -> None:
    stream = MaskStream(1000, np.dtype("<u4"))
    k1, k2 = os.urandom(32), os.urandom(32)
    a = stream.expand(k1).copy()
    assert np.array_equal(stream.expand(k1), a)
    assert not np.array_equal(stream.expand(k2), a)
    v = np.arange(1000, dtype=np.uint32)
    stream.add(v, k1)
    stream.add(v, k2)
    stream.add(v, k1, sign=-1)
    stream.add(v, k2, sign=-1)
    assert np.array_equal(v, np.arange(1000, dtype=np.uint32))
    with pytest.raises(ValueError):
        stream.expand(b"short")


def test_key_agreement_is_symmetric_and_bound_to_its_context() -> None:
    a, b = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    ctx = {"purpose": "pairwise-mask", "job": "j", "round": 1}
    k_ab = agree(a, public_bytes(b), sites=("u", "v"), **ctx)
    assert k_ab == agree(b, public_bytes(a), sites=("v", "u"), **ctx)
    assert k_ab != agree(a, public_bytes(b), sites=("u", "w"), **ctx)
    assert k_ab != agree(a, public_bytes(b), sites=("u", "v"), **{**ctx, "round": 2})
    assert k_ab != agree(a, public_bytes(b), sites=("u", "v"), **{**ctx, "job": "k"})
    assert k_ab != agree(a, public_bytes(b), sites=("u", "v"), **{**ctx, "purpose": "other"})
    with pytest.raises(ProtocolViolation):
        agree(a, bytes(32), sites=("u", "v"), **ctx)  # a low-order point gives no key


def test_sealed_shares_open_only_for_their_sender_and_receiver() -> None:
    key = os.urandom(32)
    ctx = {"job": "j", "round": 1}
    blob = seal(key, b"shares", sender="u", receiver="v", **ctx)
    assert open_sealed(key, blob, sender="u", receiver="v", **ctx) == b"shares"
    for changed in ({"sender": "v", "receiver": "u"}, {"sender": "u", "receiver": "w"}):
        with pytest.raises(ProtocolViolation):
            open_sealed(key, blob, **changed, **ctx)
    with pytest.raises(ProtocolViolation):
        open_sealed(key, blob[:-1] + bytes([blob[-1] ^ 1]), sender="u", receiver="v", **ctx)


def test_a_masked_all_zero_input_looks_uniformly_random() -> None:
    """Chi-square tests on the bytes and on each bit position of what a site sends."""
    n = 65536
    h = Harness(4, length=n, weights=[0.0, 1.0, 1.0, 1.0])
    h.clients["s00"].set_input(np.zeros(n, np.float32), 0.0)
    assert not h.config.codec.encode(np.zeros(n), 0.0).any()  # the plain input is all zeros
    h.run_to(Stage.MASKED_INPUT)
    masked = h.step()["s00"]
    assert isinstance(masked, MaskedInput)
    vector = masked.vector
    counts = np.bincount(vector.view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-6
    bits = np.unpackbits(vector.view(np.uint8)).reshape(-1, 32).sum(axis=0)
    rows = vector.shape[0]
    chi2 = float((((bits - rows / 2) ** 2) / (rows / 4)).sum())
    assert stats.chi2.sf(chi2, df=32) > 1e-6
