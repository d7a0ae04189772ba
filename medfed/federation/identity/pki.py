"""The federation's certificate authority and the startup kits it issues.

``provision(consortium.toml)`` writes (keys ``0600``, folders ``0700``)::

    <out>/ca/ca.key              the CA's ECDSA P-256 key: keep it OFFLINE (needed only to add kits)
    <out>/ca/ca.pem              the CA certificate (~10 years): the federation's one trust anchor
    <out>/ca/issued.toml         what the CA issued: name, role, serial, sha256 fingerprint
    <out>/coordinator/           tls.key, tls.pem (ECDSA P-256, serverAuth, SANs), ca.pem, kit.toml
    <out>/sites/<name>/          identity.key, identity.pem (Ed25519, ~2 years), ca.pem, kit.toml
    <out>/admins/<name>/         the same, role ``admin``
    <out>/researchers/<name>/    the same, role ``researcher``

Each ``kit.toml`` holds ``consortium``, ``name``, ``role``, ``coordinator_url``
(``https://host:port``), ``server_cert_sha256`` (the pin of the coordinator's TLS certificate)
and ``created``. An identity certificate carries the participant in its subject:
``O=<consortium>, OU=<role>, CN=<name>``. The coordinator trusts any identity the CA signed, so
``add_participant`` issues one more kit without touching anyone else's; revocation is a list the
coordinator keeps (by fingerprint or name), never a re-issue. Loading a kit back is
:mod:`medfed.federation.identity.kits`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medfed.errors import UsageError

__all__ = [
    "ROLES",
    "KitInfo",
    "ProvisionError",
    "ProvisionResult",
    "add_participant",
    "certificate_fingerprint",
    "create_ca",
    "issue_identity_certificate",
    "issue_server_certificate",
    "provision",
    "validate_name",
]

ROLES = ("site", "admin", "researcher")
ROLE_DIRS = {"site": "sites", "admin": "admins", "researcher": "researchers"}
COORDINATOR = "coordinator"
CA_DAYS, IDENTITY_DAYS, SERVER_DAYS = 3650, 730, 730
_BACKDATE = dt.timedelta(hours=1)  # tolerate clocks that lag the provisioning machine
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*")
_PIN = re.compile(r"[0-9a-f]{64}")


class ProvisionError(UsageError):
    """A consortium file, provisioned folder or startup kit is missing, invalid or in the way."""


def validate_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a valid participant or consortium name, else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProvisionError(
            f"{what} {name!r} is not valid: use 1-63 lowercase letters, digits and hyphens, "
            "starting with a letter or digit (e.g. hospital-a)"
        )
    return name


def certificate_fingerprint(cert: bytes | x509.Certificate) -> str:
    """The sha256 hex of a certificate's DER encoding (given as PEM, DER or a certificate)."""
    if isinstance(cert, x509.Certificate):
        der = cert.public_bytes(serialization.Encoding.DER)
    elif cert.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    else:
        der = bytes(cert)
    return hashlib.sha256(der).hexdigest()


# ── certificates ──────────────────────────────────────────────────────────────────────────


def _subject(consortium: str, unit: str | None, common: str) -> x509.Name:
    attrs = [(NameOID.ORGANIZATION_NAME, consortium), (NameOID.ORGANIZATIONAL_UNIT_NAME, unit)]
    attrs.append((NameOID.COMMON_NAME, common))
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in attrs if v is not None])


def _certificate(
    subject: x509.Name,
    public_key: Any,
    signer: tuple[Any, x509.Certificate | None],
    *,
    ca: bool,
    eku: x509.ObjectIdentifier | None,
    now: dt.datetime | None,
    days: int,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """Build and sign one certificate (self-signed when ``signer`` has no certificate)."""
    ca_key, ca_cert = signer
    start = now if now is not None else dt.datetime.now(dt.UTC)
    usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment"), False)
    usage |= dict.fromkeys(("key_agreement", "encipher_only", "decipher_only"), False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject if ca_cert else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca_cert is not None:
        issuer_key = ca_cert.public_key()
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key)  # type: ignore[arg-type]
        builder = builder.add_extension(aki, critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def create_ca(
    consortium: str, *, now: dt.datetime | None = None, days: int = CA_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new federation CA: an ECDSA P-256 key and its self-signed certificate."""
    validate_name(consortium, "consortium name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _subject(consortium, None, f"{consortium} federation CA")
    return key, _certificate(
        subject, key.public_key(), (key, None), ca=True, eku=None, now=now, days=days
    )


def issue_identity_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    public_key: ed25519.Ed25519PublicKey,
    name: str,
    role: str,
    consortium: str,
    now: dt.datetime | None = None,
    days: int = IDENTITY_DAYS,
) -> x509.Certificate:
    """A participant's identity certificate: ``O=consortium, OU=role, CN=name``, Ed25519 key."""
    validate_name(name)
    validate_name(consortium, "consortium name")
    _check_role(role)
    subject = _subject(consortium, role, name)
    signer = (ca_key, ca_cert)
    eku = ExtendedKeyUsageOID.CLIENT_AUTH
    return _certificate(subject, public_key, signer, ca=False, eku=eku, now=now, days=days)


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    public_key: ec.EllipticCurvePublicKey,
    hosts: Sequence[str],
    consortium: str,
    now: dt.datetime | None = None,
    days: int = SERVER_DAYS,
) -> x509.Certificate:
    """The coordinator's TLS certificate: serverAuth, one SAN per host name or IP address."""
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(_check_host(h) for h in hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    subject = _subject(consortium, COORDINATOR, hosts[0])
    eku = ExtendedKeyUsageOID.SERVER_AUTH
    return _certificate(
        subject, public_key, (ca_key, ca_cert), ca=False, eku=eku, now=now, days=days, sans=sans
    )


def _check_role(role: object) -> str:
    if role not in ROLES:
        raise ProvisionError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return str(role)


def _check_host(host: object) -> str:
    if isinstance(host, str):
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            if _DNS.fullmatch(host):
                return host.lower()
    raise ProvisionError(f"coordinator host {host!r} is not a DNS name or an IP address")


# ── files ─────────────────────────────────────────────────────────────────────────────────


def _mkdir(path: Path, *, exist_ok: bool = False) -> Path:
    path.mkdir(mode=0o700, exist_ok=exist_ok)
    os.chmod(path, 0o700)
    return path


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    mode = 0o600 if secret else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, mode), "wb") as fh:
        if hasattr(os, "fchmod"):
            os.fchmod(fh.fileno(), mode)
        fh.write(data)


def _key_pem(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Federation:
    consortium: str
    coordinator_url: str
    server_pin: str


def _write_kit(folder: Path, fed: _Federation, ca_pem: bytes, name: str, role: str) -> None:
    kit = {
        "consortium": fed.consortium,
        "name": name,
        "role": role,
        "coordinator_url": fed.coordinator_url,
        "server_cert_sha256": fed.server_pin,
        "created": _stamp(dt.datetime.now(dt.UTC)),
    }
    _write(folder / "ca.pem", ca_pem)
    _write(folder / "kit.toml", tomli_w.dumps(kit).encode())


def _issue_participant(
    folder: Path, fed: _Federation, ca_key: Any, ca_cert: x509.Certificate, name: str, role: str
) -> dict[str, Any]:
    """Write one participant kit into ``folder`` (which exists); return its ledger entry."""
    key = ed25519.Ed25519PrivateKey.generate()
    cert = issue_identity_certificate(
        ca_key, ca_cert, public_key=key.public_key(), name=name, role=role,
        consortium=fed.consortium,
    )  # fmt: skip
    _write(folder / "identity.key", _key_pem(key), secret=True)
    _write(folder / "identity.pem", _pem(cert))
    _write_kit(folder, fed, _pem(ca_cert), name, role)
    return {
        "name": name,
        "role": role,
        "serial": format(cert.serial_number, "x"),
        "sha256": certificate_fingerprint(cert),
        "not_after": _stamp(cert.not_valid_after_utc),
    }


def _write_ledger(out: Path, fed: _Federation, issued: list[dict[str, Any]]) -> None:
    ledger = {
        "consortium": fed.consortium,
        "coordinator_url": fed.coordinator_url,
        "server_cert_sha256": fed.server_pin,
        "issued": issued,
    }
    tmp = out / "ca" / ".issued.toml.tmp"
    tmp.unlink(missing_ok=True)
    _write(tmp, tomli_w.dumps(ledger).encode())
    os.replace(tmp, out / "ca" / "issued.toml")


# ── provisioning ──────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class KitInfo:
    """One kit that ``provision`` or ``add_participant`` wrote."""

    name: str
    role: str
    path: Path


@dataclass(frozen=True)
class ProvisionResult:
    """What ``provision`` wrote: the CA files and one kit per participant."""

    out_dir: Path
    consortium: str
    coordinator_url: str
    ca_key: Path
    ca_cert: Path
    kits: tuple[KitInfo, ...]  # the coordinator's first, then sites, admins, researchers


def _read_consortium(path: Path) -> tuple[str, str, list[str], list[tuple[str, str]]]:
    """(name, url, TLS hosts, [(participant, role)]) from ``consortium.toml``, validated."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProvisionError(f"{path} does not exist; write a consortium.toml first") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProvisionError(f"{path} is not a readable TOML file ({exc})") from None

    def table(obj: object, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ProvisionError(f"{path}: [{where}] must be a table")
        if unknown := sorted(set(obj) - allowed):
            raise ProvisionError(
                f"{path}: unknown key {unknown[0]!r} in {where or 'the top level'}; "
                f"expected {', '.join(sorted(allowed))}"
            )
        return obj

    top = table(raw, "", {"name", "coordinator", "participants"})
    name = validate_name(top.get("name"), "consortium name")
    coord = table(top.get("coordinator", {}), "coordinator", {"host", "port", "alt_names"})
    host = _check_host(coord.get("host"))
    port = coord.get("port", 8443)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ProvisionError(f"{path}: coordinator port {port!r} must be an integer 1-65535")
    alt = coord.get("alt_names", [])
    if not isinstance(alt, list):
        raise ProvisionError(f"{path}: coordinator alt_names must be a list of host names")
    hosts = [host, *(_check_host(a) for a in alt)]
    url_host = f"[{host}]" if ":" in host else host
    parts = table(top.get("participants", {}), "participants", {f"{d}" for d in ROLE_DIRS.values()})
    people: list[tuple[str, str]] = []
    for role, key in ROLE_DIRS.items():
        names = parts.get(key, [])
        if not isinstance(names, list):
            raise ProvisionError(f"{path}: participants.{key} must be a list of names")
        people += [(validate_name(n, f"{role} name"), role) for n in names]
    seen: set[str] = set()
    for person, _ in people:
        if person in seen:
            raise ProvisionError(
                f"{path}: participant {person!r} is listed twice; names are unique"
            )
        seen.add(person)
    return name, f"https://{url_host}:{port}", hosts, people


def provision(
    config_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> ProvisionResult:
    """Create the federation CA and every startup kit that ``consortium.toml`` lists.

    ``out_dir`` defaults to ``<folder of the config>/<consortium name>``; it must not exist or
    be empty. Everything is written to a hidden folder first and renamed into place, so a
    failure leaves nothing half-provisioned.
    """
    config = Path(config_path)
    consortium, url, hosts, people = _read_consortium(config)
    out = Path(out_dir) if out_dir is not None else config.parent / consortium
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProvisionError(
            f"{out} already exists and is not empty; provisioning never overwrites a federation "
            "(use --add to issue one more kit, or choose another --out)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ca_key, ca_cert = create_ca(consortium)
        _write(_mkdir(stage / "ca") / "ca.key", _key_pem(ca_key), secret=True)
        _write(stage / "ca" / "ca.pem", _pem(ca_cert))
        tls_key = ec.generate_private_key(ec.SECP256R1())
        tls_cert = issue_server_certificate(
            ca_key, ca_cert, public_key=tls_key.public_key(), hosts=hosts, consortium=consortium
        )
        fed = _Federation(consortium, url, certificate_fingerprint(tls_cert))
        coord = _mkdir(stage / COORDINATOR)
        _write(coord / "tls.key", _key_pem(tls_key), secret=True)
        _write(coord / "tls.pem", _pem(tls_cert))
        _write_kit(coord, fed, _pem(ca_cert), COORDINATOR, COORDINATOR)
        kits = [KitInfo(COORDINATOR, COORDINATOR, out / COORDINATOR)]
        issued = []
        for name, role in people:
            rel = Path(ROLE_DIRS[role]) / name
            _mkdir(stage / ROLE_DIRS[role], exist_ok=True)
            issued.append(_issue_participant(_mkdir(stage / rel), fed, ca_key, ca_cert, name, role))
            kits.append(KitInfo(name, role, out / rel))
        _write_ledger(stage, fed, issued)
        if out.exists():
            out.rmdir()
        os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ProvisionResult(
        out, consortium, url, out / "ca" / "ca.key", out / "ca" / "ca.pem", tuple(kits)
    )


def add_participant(out_dir: str | os.PathLike[str], name: str, role: str) -> Path:
    """Issue one more kit with the existing CA (needs ``ca/ca.key``); touch no other kit."""
    out = Path(out_dir)
    validate_name(name)
    _check_role(role)
    if not (out / "ca" / "ca.key").is_file():
        raise ProvisionError(
            f"{out} has no ca/ca.key; adding a participant needs the CA folder that "
            "`medfed provision` wrote (kept offline)"
        )
    ca_key = _load_key(out / "ca" / "ca.key", ec.EllipticCurvePrivateKey, "the CA key")
    ca_cert = _load_cert(out / "ca" / "ca.pem")
    if ca_key.public_key() != ca_cert.public_key():
        raise ProvisionError(
            f"{out / 'ca'}: ca.key does not belong to ca.pem; restore the CA folder"
        )
    try:
        ledger = tomllib.loads((out / "ca" / "issued.toml").read_text(encoding="utf-8"))
        fed = _Federation(
            ledger["consortium"], ledger["coordinator_url"], ledger["server_cert_sha256"]
        )
        issued = list(ledger["issued"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        raise ProvisionError(
            f"{out}/ca/issued.toml is missing or damaged; restore it from backup"
        ) from None
    taken = {str(entry.get("name")) for entry in issued} | {
        p.name for d in ROLE_DIRS.values() if (out / d).is_dir() for p in (out / d).iterdir()
    }
    if name in taken:
        raise ProvisionError(f"{name!r} already has a kit in {out}; choose another name")
    parent = _mkdir(out / ROLE_DIRS[role], exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        issued.append(_issue_participant(stage, fed, ca_key, ca_cert, name, role))
        os.rename(stage, parent / name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _write_ledger(out, fed, issued)
    return parent / name


# ── loading kits ──────────────────────────────────────────────────────────────────────────


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise ProvisionError(f"{path} is missing or unreadable; re-copy the kit folder") from None


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read_bytes(path))
    except ValueError:
        raise ProvisionError(f"{path} is not a PEM certificate; re-copy the kit folder") from None


def _load_key(path: Path, kind: Any, what: str) -> Any:
    if os.name == "posix" and path.exists() and path.stat().st_mode & 0o077:
        raise ProvisionError(f"{what} {path} is readable by other users; run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(_read_bytes(path), password=None)
    except (ValueError, TypeError):
        raise ProvisionError(f"{path} is not an unencrypted PEM key; re-copy the kit") from None
    if not isinstance(key, kind):
        raise ProvisionError(f"{path} holds the wrong kind of key for {what}; re-copy the kit")
    return key
