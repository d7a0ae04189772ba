"""Masks and the keys behind them: X25519 agreement, HKDF-SHA256, AES-256-CTR, AES-GCM.

* **Key agreement.** Two sites u, v agree on a 32-byte key as
  ``HKDF-SHA256(X25519(sk_u, pk_v), info)`` where ``info`` binds, length-prefixed: the
  protocol label, the purpose (``pairwise-mask`` or ``share-encryption``), the job id, the round
  and the two site names in sorted order — so both ends derive the same key, and a key of one
  job, round or purpose is useless for any other.
* **PRG.** A 32-byte key expands to a mask with AES-256 in counter mode (zero IV; every key is
  used for exactly one stream): the keystream is written in one call into a reusable buffer and
  viewed as little-endian ``uint32``/``uint64`` (``np.frombuffer``), then added or subtracted in
  place. AES-NI makes this a few GB/s; ChaCha20 would be the choice on CPUs without it.
* **Self mask.** A fresh 32-byte seed ``b_u`` from :mod:`secrets` is the PRG key directly; the
  coordinator learns only ``SHA-256(label ‖ job ‖ round ‖ site ‖ b_u)`` (a commitment that lets
  it check a rebuilt seed) until the seed itself is rebuilt from shares.
* **Share encryption.** Shares travel through the coordinator sealed with AES-256-GCM under the
  ``share-encryption`` key; the associated data binds job, round, sender and receiver.

Nothing here uses numpy's random generators.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medfed.secagg.errors import ProtocolViolation

__all__ = [
    "KEY_BYTES",
    "MaskStream",
    "agree",
    "commitment",
    "encode_fields",
    "open_sealed",
    "public_bytes",
    "seal",
    "sealed_size",
]

KEY_BYTES = 32
_LABEL = b"medfed-secagg/1"
_NONCE = 12
_TAG = 16
_ZERO_IV = bytes(16)


def encode_fields(*fields: str | bytes | int) -> bytes:
    """Unambiguous bytes of a tuple of fields: each one length-prefixed (ints as 8 bytes)."""
    out = bytearray()
    for f in fields:
        raw = f.to_bytes(8, "big", signed=True) if isinstance(f, int) else f
        raw = raw.encode() if isinstance(raw, str) else raw
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def public_bytes(key: x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def agree(
    private_key: x25519.X25519PrivateKey,
    peer_public: bytes,
    *,
    purpose: str,
    job: str,
    round: int,
    sites: tuple[str, str],
) -> bytes:
    """The 32-byte key that ``sites`` (the owner of ``private_key`` and its peer) share for
    ``purpose`` in this job and round."""
    try:
        secret = private_key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise ProtocolViolation(f"the public key of {sites} is not a usable X25519 key") from None
    a, b = sorted(sites)
    info = encode_fields(_LABEL, purpose, job, round, a, b)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def commitment(seed: bytes, *, job: str, round: int, site: str) -> bytes:
    """SHA-256 commitment to a self-mask seed (hiding: the seed is 256 random bits)."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(encode_fields(_LABEL, "self-mask", job, round, site, seed))
    return digest.finalize()


def _aad(job: str, round: int, sender: str, receiver: str) -> bytes:
    return encode_fields(_LABEL, "shares", job, round, sender, receiver)


def seal(
    key: bytes, plaintext: bytes, *, job: str, round: int, sender: str, receiver: str
) -> bytes:
    """AES-GCM ciphertext (random nonce ‖ ciphertext ‖ tag) of shares sent to ``receiver``."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(job, round, sender, receiver))


def open_sealed(
    key: bytes, blob: bytes, *, job: str, round: int, sender: str, receiver: str
) -> bytes:
    """The plaintext of :func:`seal`; ProtocolViolation when it was tampered with."""
    try:
        aad = _aad(job, round, sender, receiver)
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except (InvalidTag, ValueError):
        raise ProtocolViolation(f"the shares from {sender!r} do not decrypt") from None


def sealed_size(plaintext_size: int) -> int:
    return _NONCE + plaintext_size + _TAG


class MaskStream:
    """Adds or subtracts PRG masks of one length into vectors, reusing one keystream buffer."""

    def __init__(self, length: int, dtype: np.dtype[np.unsignedinteger]) -> None:
        self.length = length
        self.dtype = np.dtype(dtype)
        nbytes = length * self.dtype.itemsize
        self._zeros = memoryview(bytes(nbytes))
        self._buffer = bytearray(nbytes + 16)  # update_into wants one block of slack
        self._view: npt.NDArray[np.unsignedinteger] = np.frombuffer(
            self._buffer, dtype=self.dtype, count=length
        )

    def expand(self, key: bytes) -> npt.NDArray[np.unsignedinteger]:
        """The mask of ``key`` (a view of the shared buffer: use it before the next call)."""
        if len(key) != KEY_BYTES:
            raise ValueError("a mask key is 32 bytes")
        encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
        encryptor.update_into(self._zeros, self._buffer)
        return self._view

    def add(self, target: npt.NDArray[np.unsignedinteger], key: bytes, *, sign: int = 1) -> None:
        """``target += sign · PRG(key)`` modulo 2^b, in place."""
        mask = self.expand(key)
        if sign > 0:
            np.add(target, mask, out=target)
        else:
            np.subtract(target, mask, out=target)
