"""The participants' identity certificates, as the coordinator last saw them.

Every signed request carries its sender's DER certificate (``X-Medfed-Cert``). The gate keeps
the latest one of each participant in the ``certificates`` table (its own table, so databases
made before it still open: ``create_all`` adds it). Secure aggregation needs them twice:

- the coordinator checks the sites' key advertisements with the Ed25519 key of the stored
  certificate (:func:`identity_verifier`);
- a node fetches its peers' certificates (``GET /v1/jobs/{id}/certificates``) and checks each
  against its own copy of the federation CA before trusting the key in it, so a coordinator
  cannot substitute keys (:func:`peer_keys`).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Column, LargeBinary, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from medfed.errors import MedfedError
from medfed.federation.identity.signing import AuthError, verify_certificate
from medfed.secagg import Verifier

__all__ = ["CertificateBook", "identity_verifier", "peer_keys"]

_metadata = MetaData()

certificates = Table(
    "certificates",
    _metadata,
    Column("name", String(64), primary_key=True),
    Column("der", LargeBinary, nullable=False),
    Column("fingerprint", String(64), nullable=False),
)


class CertificateBook:
    """The latest identity certificate of each participant (written when its key changes)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _metadata.create_all(engine)
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, name: str, der: bytes, fingerprint: str) -> None:
        """Store ``name``'s certificate, unless it is the one stored already."""
        with self._lock:
            if self._known.get(name) == fingerprint:
                return
        values = {"der": der, "fingerprint": fingerprint}
        for _ in range(2):  # two first requests of a participant may race to insert
            try:
                with self.engine.begin() as c:
                    res = c.execute(
                        update(certificates).where(certificates.c.name == name).values(**values)
                    )
                    if res.rowcount == 0:
                        c.execute(insert(certificates).values(name=name, **values))
                break
            except IntegrityError:
                continue
        with self._lock:
            self._known[name] = fingerprint

    def get(self, names: Iterable[str]) -> dict[str, bytes]:
        wanted = sorted(set(names))
        if not wanted:
            return {}
        with self.engine.begin() as c:
            rows = c.execute(
                select(certificates.c.name, certificates.c.der).where(
                    certificates.c.name.in_(wanted)
                )
            ).all()
        return {r[0]: bytes(r[1]) for r in rows}


def _public_key(der: bytes) -> ed25519.Ed25519PublicKey | None:
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    return key if isinstance(key, ed25519.Ed25519PublicKey) else None


def identity_verifier(book: CertificateBook) -> Verifier:
    """``verify_identity`` for the coordinator: each site's key from its stored certificate."""

    def verify(site: str, message: bytes, signature: bytes) -> bool:
        der = book.get([site]).get(site)
        key = None if der is None else _public_key(der)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return verify


class PeerCertificateError(MedfedError):
    """A peer's certificate, as the coordinator sent it, is not one this site trusts."""


def peer_keys(
    raw: Mapping[str, Any],
    sites: Iterable[str],
    *,
    ca_pem: bytes,
    consortium: str,
    now: float | None = None,
) -> dict[str, ed25519.Ed25519PublicKey]:
    """The Ed25519 keys of ``sites`` from the certificates a coordinator returned (base64 DER).

    Each must be a site identity of this consortium, named as the site, valid now, issued by
    this site's own copy of the federation CA; anything else raises
    :class:`PeerCertificateError` (one sentence).
    """
    out: dict[str, ed25519.Ed25519PublicKey] = {}
    moment = time.time() if now is None else now
    for site in sites:
        encoded = raw.get(site)
        if not isinstance(encoded, str):
            raise PeerCertificateError(f"the coordinator sent no certificate of site {site!r}")
        try:
            der = base64.b64decode(encoded.encode("ascii"), validate=True)
            name, _, key = verify_certificate(
                der, ca_cert=ca_pem, consortium=consortium, now=moment, roles=("site",)
            )
        except (AuthError, ValueError, UnicodeEncodeError) as exc:
            raise PeerCertificateError(
                f"the certificate the coordinator sent for site {site!r} is not trusted ({exc})"
            ) from None
        if name != site:
            raise PeerCertificateError(
                f"the coordinator sent the certificate of {name!r} for site {site!r}"
            )
        out[site] = key
    return out
