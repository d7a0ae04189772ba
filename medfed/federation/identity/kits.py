"""A participant's startup kit on disk, loaded and checked (see
:mod:`medfed.federation.identity.pki` for what ``medfed provision`` writes)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from medfed.federation.identity.pki import (
    _PIN,
    COORDINATOR,
    ROLES,
    ProvisionError,
    _load_cert,
    _load_key,
    _pem,
    _read_bytes,
    certificate_fingerprint,
    validate_name,
)

__all__ = ["Kit", "load_coordinator_kit", "load_kit"]


@dataclass(frozen=True)
class Kit:
    """A loaded startup kit. Participants hold an Ed25519 identity key; the coordinator's kit
    holds the paths of its TLS key and certificate instead (``identity_key`` is None)."""

    consortium: str
    name: str
    role: str
    coordinator_url: str
    server_pin: str
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    path: Path
    identity_key: ed25519.Ed25519PrivateKey | None = field(default=None, repr=False)
    tls_key_path: Path | None = None
    tls_cert_path: Path | None = None
    created: str = ""

    @property
    def ca_path(self) -> Path:
        return self.path / "ca.pem"

    @property
    def fingerprint(self) -> str:
        """sha256 of this kit's own certificate (identity, or the coordinator's TLS)."""
        return certificate_fingerprint(self.cert_pem)


def load_kit(path: str | os.PathLike[str]) -> Kit:
    """Load and check a kit folder (or its ``kit.toml``): the key matches the certificate, the
    certificate was issued by the kit's CA and names this participant."""
    folder = Path(path)
    if folder.name == "kit.toml":
        folder = folder.parent
    try:
        meta = tomllib.loads((folder / "kit.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProvisionError(f"{folder} is not a medfed startup kit (it has no kit.toml)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise ProvisionError(f"{folder}/kit.toml is damaged; re-copy the kit folder") from None
    fields = ("consortium", "name", "role", "coordinator_url", "server_cert_sha256")
    if any(not isinstance(meta.get(f), str) for f in fields):
        missing = next(f for f in fields if not isinstance(meta.get(f), str))
        raise ProvisionError(f"{folder}/kit.toml lacks {missing!r}; re-copy the kit folder")
    role, name = meta["role"], meta["name"]
    if role not in (*ROLES, COORDINATOR) or not _PIN.fullmatch(meta["server_cert_sha256"]):
        raise ProvisionError(f"{folder}/kit.toml has an invalid role or pin; re-copy the kit")
    if not meta["coordinator_url"].startswith("https://"):
        raise ProvisionError(f"{folder}/kit.toml: coordinator_url must start with https://")
    validate_name(name)
    ca_pem = _read_bytes(folder / "ca.pem")
    ca_cert = _load_cert(folder / "ca.pem")
    stem = "tls" if role == COORDINATOR else "identity"
    kind = ec.EllipticCurvePrivateKey if role == COORDINATOR else ed25519.Ed25519PrivateKey
    key = _load_key(folder / f"{stem}.key", kind, f"the {stem} key")
    cert = _load_cert(folder / f"{stem}.pem")
    if key.public_key() != cert.public_key():
        raise ProvisionError(f"{folder}: {stem}.key does not belong to {stem}.pem; re-copy the kit")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ProvisionError(f"{folder}: {stem}.pem was not issued by ca.pem") from None
    subject = {a.oid: a.value for a in cert.subject}
    if (
        subject.get(NameOID.ORGANIZATION_NAME) != meta["consortium"]
        or subject.get(NameOID.ORGANIZATIONAL_UNIT_NAME) != role
        or (role != COORDINATOR and subject.get(NameOID.COMMON_NAME) != name)
    ):
        raise ProvisionError(f"{folder}: {stem}.pem names another participant than kit.toml")
    common = dict(
        consortium=meta["consortium"], name=name, role=role,
        coordinator_url=meta["coordinator_url"], server_pin=meta["server_cert_sha256"],
        ca_pem=ca_pem, cert_pem=_pem(cert), path=folder, created=str(meta.get("created", "")),
    )  # fmt: skip
    if role == COORDINATOR:
        if certificate_fingerprint(cert) != meta["server_cert_sha256"]:
            raise ProvisionError(f"{folder}: tls.pem does not match the pin in kit.toml")
        return Kit(**common, tls_key_path=folder / "tls.key", tls_cert_path=folder / "tls.pem")
    return Kit(**common, identity_key=key)


def load_coordinator_kit(path: str | os.PathLike[str]) -> Kit:
    """Load the coordinator's kit (TLS key and certificate, CA); refuse a participant's kit."""
    kit = load_kit(path)
    if kit.role != COORDINATOR:
        raise ProvisionError(
            f"{kit.path} is the kit of {kit.role} {kit.name!r}, not the coordinator's"
        )
    return kit
