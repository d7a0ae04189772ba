"""The federation CA and startup kits: real keys, real files, a real TLS handshake."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import ssl
import stat
import threading
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medfed.errors import UsageError
from medfed.federation.identity import kits, pki
from medfed.federation.identity.pki import ProvisionError

CONSORTIUM = """\
name = "demo-consortium"
[coordinator]
host = "127.0.0.1"
port = 8443
alt_names = ["localhost"]
[participants]
sites = ["hospital-a", "hospital-b", "hospital-c"]
admins = ["alice"]
researchers = ["bob"]
"""


def write_config(folder: Path, text: str = CONSORTIUM) -> Path:
    path = folder / "consortium.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> pki.ProvisionResult:
    folder = tmp_path_factory.mktemp("fed")
    return pki.provision(write_config(folder), folder / "out")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    return str(cert.subject.get_attributes_for_oid(oid)[0].value)


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ── layout and certificates ──────────────────────────────────────────────────────────────


def test_layout_and_permissions(fed: pki.ProvisionResult) -> None:
    out = fed.out_dir
    assert [(k.name, k.role) for k in fed.kits] == [
        ("coordinator", "coordinator"),
        ("hospital-a", "site"),
        ("hospital-b", "site"),
        ("hospital-c", "site"),
        ("alice", "admin"),
        ("bob", "researcher"),
    ]
    assert {p.name for p in (out / "ca").iterdir()} == {"ca.key", "ca.pem", "issued.toml"}
    assert {p.name for p in (out / "coordinator").iterdir()} == {
        "tls.key", "tls.pem", "ca.pem", "kit.toml",
    }  # fmt: skip
    for folder in ("sites/hospital-a", "admins/alice", "researchers/bob"):
        names = {p.name for p in (out / folder).iterdir()}
        assert names == {"identity.key", "identity.pem", "ca.pem", "kit.toml"}
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.suffix == ".key":
            assert mode == 0o600, path
        else:
            assert mode & 0o022 == 0, path
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_kit_toml(fed: pki.ProvisionResult) -> None:
    meta = tomllib.loads((fed.out_dir / "sites" / "hospital-b" / "kit.toml").read_text())
    pin = pki.certificate_fingerprint((fed.out_dir / "coordinator" / "tls.pem").read_bytes())
    assert meta["consortium"] == "demo-consortium"
    assert (meta["name"], meta["role"]) == ("hospital-b", "site")
    assert meta["coordinator_url"] == "https://127.0.0.1:8443"
    assert meta["server_cert_sha256"] == pin
    assert dt.datetime.strptime(meta["created"], "%Y-%m-%dT%H:%M:%SZ")
    ledger = tomllib.loads((fed.out_dir / "ca" / "issued.toml").read_text())
    bob = next(e for e in ledger["issued"] if e["name"] == "bob")
    assert bob["sha256"] == pki.certificate_fingerprint(
        (fed.out_dir / "researchers" / "bob" / "identity.pem").read_bytes()
    )


def test_ca_certificate(fed: pki.ProvisionResult) -> None:
    ca = _cert(fed.ca_cert)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    years = (ca.not_valid_after_utc - ca.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    ca.verify_directly_issued_by(ca)  # self-signed


def test_identity_certificate(fed: pki.ProvisionResult) -> None:
    ca = _cert(fed.ca_cert)
    a = _cert(fed.out_dir / "sites" / "hospital-a" / "identity.pem")
    b = _cert(fed.out_dir / "sites" / "hospital-b" / "identity.pem")
    alice = _cert(fed.out_dir / "admins" / "alice" / "identity.pem")
    a.verify_directly_issued_by(ca)
    assert isinstance(a.public_key(), ed25519.Ed25519PublicKey)
    assert _subject(a, NameOID.COMMON_NAME) == "hospital-a"
    assert _subject(a, NameOID.ORGANIZATIONAL_UNIT_NAME) == "site"
    assert _subject(alice, NameOID.ORGANIZATIONAL_UNIT_NAME) == "admin"
    assert _subject(a, NameOID.ORGANIZATION_NAME) == "demo-consortium"
    usage = a.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not a.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 1.9 < (a.not_valid_after_utc - a.not_valid_before_utc).days / 365 < 2.1
    assert a.serial_number != b.serial_number and a.serial_number.bit_length() > 100


def test_server_certificate(fed: pki.ProvisionResult) -> None:
    tls = _cert(fed.out_dir / "coordinator" / "tls.pem")
    tls.verify_directly_issued_by(_cert(fed.ca_cert))
    assert isinstance(tls.public_key(), ec.EllipticCurvePublicKey)
    sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_fingerprint_accepts_pem_der_and_certificate(fed: pki.ProvisionResult) -> None:
    pem = fed.ca_cert.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest()
    assert pki.certificate_fingerprint(pem) == pki.certificate_fingerprint(der) == expected
    assert pki.certificate_fingerprint(cert) == expected


# ── a real TLS handshake on 127.0.0.1 ──────────────────────────────────────────────────────


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> bytes:
    """Connect ``client_ctx`` to a one-shot server; return the server certificate (DER)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        with client_ctx.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.recv(5) == b"hello"
            peer = tls.getpeercert(binary_form=True)
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        thread.join(10)
        listener.close()
    assert peer is not None
    return peer


def _server(kit: kits.Kit) -> ssl.SSLContext:
    """What uvicorn builds from ``ssl_certfile``/``ssl_keyfile``."""
    assert kit.tls_cert_path is not None and kit.tls_key_path is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(kit.tls_cert_path, kit.tls_key_path)
    return ctx


def _client(kit: kits.Kit) -> ssl.SSLContext:
    """Trust the kit's CA file only, with the strict X.509 profile Python 3.13 enforces."""
    ctx = ssl.create_default_context(cafile=str(kit.ca_path))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_handshake_with_provisioned_certificates(fed: pki.ProvisionResult, host: str) -> None:
    coordinator = kits.load_coordinator_kit(fed.out_dir / "coordinator")
    site = kits.load_kit(fed.out_dir / "sites" / "hospital-a")
    peer = _handshake(_server(coordinator), _client(site), host)
    assert pki.certificate_fingerprint(peer) == site.server_pin  # the pin in every kit


def test_tls_refuses_wrong_host_and_foreign_ca(fed: pki.ProvisionResult, tmp_path: Path) -> None:
    server = _server(kits.load_coordinator_kit(fed.out_dir / "coordinator"))
    site = kits.load_kit(fed.out_dir / "sites" / "hospital-a")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, _client(site), "coordinator.example.org")
    other = pki.provision(write_config(tmp_path), tmp_path / "other")
    stranger = kits.load_kit(other.out_dir / "sites" / "hospital-a")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, _client(stranger), "127.0.0.1")
    assert stranger.server_pin != site.server_pin


# ── names and the consortium file ─────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "name", ["Hospital-A", "-a", "a_b", "a" * 64, "", "a\n", "hospital a", "ä", "../x"]
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ProvisionError, match="is not valid"):
        pki.validate_name(name)


@pytest.mark.parametrize("name", ["a", "hospital-a", "0", "a" * 63, "h-1-"])
def test_valid_names(name: str) -> None:
    assert pki.validate_name(name) == name


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (CONSORTIUM.replace("demo-consortium", "Demo"), "consortium name 'Demo'"),
        (CONSORTIUM.replace('"bob"', '"Bob"'), "researcher name 'Bob'"),
        (CONSORTIUM.replace('"alice"', '"hospital-a"'), "listed twice"),
        (CONSORTIUM.replace("port = 8443", "port = 70000"), "port"),
        (CONSORTIUM.replace('"127.0.0.1"', '"bad host!"'), "not a DNS name"),
        (CONSORTIUM.replace("[participants]", "[participant]"), "unknown key 'participant'"),
        (CONSORTIUM.replace("sites =", "site ="), "unknown key 'site'"),
        ("name = ", "not a readable TOML"),
    ],
)
def test_bad_consortium_file(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ProvisionError, match=needle) as info:
        pki.provision(write_config(tmp_path, text), tmp_path / "out")
    assert isinstance(info.value, UsageError) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_consortium_file(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="does not exist"):
        pki.provision(tmp_path / "nope.toml")


def test_default_out_and_ipv6_url(tmp_path: Path) -> None:
    text = CONSORTIUM.replace('"127.0.0.1"', '"::1"').replace("port = 8443", "port = 9000")
    result = pki.provision(write_config(tmp_path, text))
    assert result.out_dir == tmp_path / "demo-consortium"
    assert result.coordinator_url == "https://[::1]:9000"


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "empty").mkdir()
    pki.provision(config, tmp_path / "empty")  # an empty folder is fine
    before = _files(tmp_path / "empty")
    with pytest.raises(ProvisionError, match="already exists"):
        pki.provision(config, tmp_path / "empty")
    assert _files(tmp_path / "empty") == before


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(*args: object, **kwargs: object) -> x509.Certificate:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    real = pki.issue_identity_certificate
    monkeypatch.setattr(pki, "issue_identity_certificate", failing)
    with pytest.raises(RuntimeError):
        pki.provision(write_config(tmp_path), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consortium.toml"]


# ── adding a participant later ────────────────────────────────────────────────────────────


def test_add_participant_touches_nothing_else(tmp_path: Path) -> None:
    result = pki.provision(write_config(tmp_path), tmp_path / "out")
    before = _files(result.out_dir)
    path = pki.add_participant(result.out_dir, "hospital-d", "site")
    assert path == result.out_dir / "sites" / "hospital-d"
    after = _files(result.out_dir)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {
        "ca/issued.toml",
        *(f"sites/hospital-d/{f}" for f in ("identity.key", "identity.pem", "ca.pem", "kit.toml")),
    }
    kit = kits.load_kit(path)
    assert (kit.name, kit.role, kit.consortium) == ("hospital-d", "site", "demo-consortium")
    assert kit.server_pin == kits.load_kit(result.out_dir / "sites" / "hospital-a").server_pin
    assert stat.S_IMODE((path / "identity.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    _cert(path / "identity.pem").verify_directly_issued_by(_cert(result.ca_cert))
    ledger = tomllib.loads((result.out_dir / "ca" / "issued.toml").read_text())
    assert [e["name"] for e in ledger["issued"]][-1] == "hospital-d"
    assert pki.add_participant(result.out_dir, "carol", "researcher").parent.name == "researchers"


def test_add_participant_refusals(fed: pki.ProvisionResult, tmp_path: Path) -> None:
    for name, role in [("hospital-a", "site"), ("hospital-a", "admin"), ("alice", "site")]:
        with pytest.raises(ProvisionError, match="already has a kit"):
            pki.add_participant(fed.out_dir, name, role)
    with pytest.raises(ProvisionError, match="role 'root'"):
        pki.add_participant(fed.out_dir, "eve", "root")
    with pytest.raises(ProvisionError, match="is not valid"):
        pki.add_participant(fed.out_dir, "Eve", "site")
    with pytest.raises(ProvisionError, match=r"no ca/ca\.key"):
        pki.add_participant(tmp_path, "eve", "site")


# ── loading kits ──────────────────────────────────────────────────────────────────────────


def test_load_kits(fed: pki.ProvisionResult) -> None:
    site = kits.load_kit(fed.out_dir / "sites" / "hospital-a" / "kit.toml")
    assert isinstance(site.identity_key, ed25519.Ed25519PrivateKey)
    assert site.tls_key_path is None and site.ca_pem == fed.ca_cert.read_bytes()
    assert "BEGIN" not in repr(site) and "identity_key" not in repr(site)
    coordinator = kits.load_coordinator_kit(fed.out_dir / "coordinator")
    assert coordinator.identity_key is None and coordinator.role == "coordinator"
    assert coordinator.tls_cert_path == fed.out_dir / "coordinator" / "tls.pem"
    assert coordinator.fingerprint == coordinator.server_pin == site.server_pin
    with pytest.raises(ProvisionError, match="not the coordinator's"):
        kits.load_coordinator_kit(fed.out_dir / "admins" / "alice")


def _copy_kit(src: Path, dst: Path) -> Path:
    dst.mkdir(mode=0o700)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
        os.chmod(dst / f.name, stat.S_IMODE(f.stat().st_mode))
    return dst


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda k, o: (k / "kit.toml").unlink(), "no kit.toml"),
        (lambda k, o: (k / "kit.toml").write_text("role = "), "kit.toml is damaged"),
        (lambda k, o: (k / "kit.toml").write_text('name = "x"'), "lacks 'consortium'"),
        (lambda k, o: (k / "identity.pem").write_text("junk"), "not a PEM certificate"),
        (lambda k, o: (k / "identity.key").write_text("junk"), "not an unencrypted PEM key"),
        (lambda k, o: (k / "ca.pem").unlink(), "missing or unreadable"),
        (lambda k, o: os.chmod(k / "identity.key", 0o644), "chmod 600"),
        (
            lambda k, o: (k / "identity.key").write_bytes(
                (o / "sites" / "hospital-b" / "identity.key").read_bytes()
            ),
            "does not belong",
        ),
        (
            lambda k, o: (k / "identity.pem").write_bytes(
                (o / "sites" / "hospital-b" / "identity.pem").read_bytes()
            ),
            "does not belong",
        ),
    ],
)
def test_damaged_kit_is_one_clear_error(
    fed: pki.ProvisionResult, tmp_path: Path, damage: object, needle: str
) -> None:
    kit = _copy_kit(fed.out_dir / "sites" / "hospital-a", tmp_path / "kit")
    damage(kit, fed.out_dir)  # type: ignore[operator]
    with pytest.raises(ProvisionError, match=needle) as info:
        kits.load_kit(kit)
    assert "\n" not in str(info.value)


def test_kit_from_another_ca_is_refused(fed: pki.ProvisionResult, tmp_path: Path) -> None:
    kit = _copy_kit(fed.out_dir / "sites" / "hospital-a", tmp_path / "kit")
    other = pki.provision(write_config(tmp_path), tmp_path / "other")
    (kit / "ca.pem").write_bytes(other.ca_cert.read_bytes())
    with pytest.raises(ProvisionError, match=r"not issued by ca\.pem"):
        kits.load_kit(kit)


def test_missing_kit_folder(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="not a medfed startup kit"):
        kits.load_kit(tmp_path / "nowhere")
