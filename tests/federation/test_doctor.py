"""``medfed doctor`` against real servers on 127.0.0.1.

One module-scoped federation: a provisioned consortium and its coordinator (uvicorn over TLS in a
thread). Each failure is produced for real: a port where nothing listens, a host name that cannot
resolve, servers with another federation's certificate, with an unpinned one and with no TLS at
all, a coordinator that trusts another CA, a revoked identity. The clock comparison is tested
directly and through an injected clock.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
import uvicorn
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from medfed.cli.doctor import doctor
from medfed.federation import doctor as doc
from medfed.federation.coordinator.server import Coordinator, CoordinatorSettings
from medfed.federation.identity.kits import load_coordinator_kit, load_kit
from medfed.federation.identity.pki import issue_server_certificate, provision
from medfed.federation.transfer.client import client_for_kit

pytestmark = pytest.mark.integration

CONSORTIUM = "doctor-consortium"
TIMEOUT = 5.0


def _write_consortium(path: Path, port: int) -> Path:
    path.write_text(
        f'name = "{CONSORTIUM}"\n[coordinator]\nhost = "127.0.0.1"\nport = {port}\n'
        '[participants]\nsites = ["hospital-a", "revoked-site"]\n'
        'admins = ["alice"]\nresearchers = ["bob"]\n'
    )
    return path


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


@contextmanager
def _coordinator(kits: Path, state: Path, *, trust_ca_pem: bytes | None = None) -> Iterator[int]:
    """Serve a real coordinator over TLS on a free port (``trust_ca_pem``: another CA to trust)."""
    ck = load_coordinator_kit(kits / "coordinator")
    assert ck.tls_cert_path is not None and ck.tls_key_path is not None
    sock = _listener()
    coordinator = Coordinator(
        CoordinatorSettings(
            consortium=ck.consortium,
            ca_cert_pem=trust_ca_pem or ck.ca_pem,
            state_dir=state,
            port=_port(sock),
            tls_cert=ck.tls_cert_path,
            tls_key=ck.tls_key_path,
        )
    )
    config = uvicorn.Config(
        coordinator.app,
        host="127.0.0.1",
        port=_port(sock),
        log_level="warning",
        ssl_certfile=str(ck.tls_cert_path),
        ssl_keyfile=str(ck.tls_key_path),
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "coordinator did not start"
            time.sleep(0.02)
        yield _port(sock)
    finally:
        server.should_exit = True
        thread.join(15)
        coordinator.store.close()
        sock.close()


@dataclass(frozen=True)
class Live:
    kits: Path
    port: int
    other: Path  # another federation, provisioned under the same consortium name

    def kit(self, role_dir: str, name: str) -> Path:
        return self.kits / role_dir / name


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("doctor")
    with _listener() as probe:  # any port: the coordinator's real port goes into copied kits
        port = _port(probe)
    provision(_write_consortium(root / "consortium.toml", port), root / "kits")
    provision(_write_consortium(root / "other.toml", port), root / "other")
    with _coordinator(root / "kits", root / "state") as real_port:
        yield Live(root / "kits", real_port, root / "other")


def _copy_kit(kit: Path, dest: Path, url: str, **changes: str) -> Path:
    """A copy of ``kit`` (modes kept) whose kit.toml points at ``url``."""
    shutil.copytree(kit, dest)
    meta = tomllib.loads((dest / "kit.toml").read_text())
    meta.update(coordinator_url=url, **changes)
    (dest / "kit.toml").write_text(tomli_w.dumps(meta))
    return dest


def _kit_at(
    live: Live, tmp_path: Path, port: int, role_dir: str = "sites", name: str = "hospital-a"
) -> Path:
    return _copy_kit(live.kit(role_dir, name), tmp_path / name, f"https://127.0.0.1:{port}")


def _statuses(checks: list[doc.Check]) -> list[tuple[str, str]]:
    return [(c.name, c.status) for c in checks]


def _failed(checks: list[doc.Check], name: str) -> doc.Check:
    """The last check, which must be the failure ``name`` (nothing ran after it)."""
    assert checks[-1].name == name and checks[-1].status == "fail", _statuses(checks)
    assert all(c.ok for c in checks[:-1]), _statuses(checks)
    assert [c.name for c in checks] == list(doc.CHECKS[: len(checks)])
    return checks[-1]


# ── a tiny TLS (or not) server ───────────────────────────────────────────────────────────────


@contextmanager
def _tls_server(cert: Path | None, key: Path | None) -> Iterator[int]:
    """Accept connections on 127.0.0.1; TLS with ``cert``/``key``, or plain HTTP bytes."""
    ctx = None
    if cert is not None and key is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    if ctx is None:
                        conn.recv(1024)
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    else:
                        with ctx.wrap_socket(conn, server_side=True) as tls:
                            tls.recv(1024)
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield _port(listener)
    finally:
        stop.set()
        thread.join(10)
        listener.close()


# ── everything works ──────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("role_dir", "name", "probe"),
    [
        ("sites", "hospital-a", "GET /v1/work?wait=0"),
        ("researchers", "bob", "GET /v1/jobs"),
        ("admins", "alice", "GET /v1/participants"),
    ],
)
def test_every_check_passes(
    live: Live, tmp_path: Path, role_dir: str, name: str, probe: str
) -> None:
    kit = _kit_at(live, tmp_path, live.port, role_dir, name)
    checks = doc.run_checks(kit, timeout=TIMEOUT)
    assert _statuses(checks) == [(n, "pass") for n in doc.CHECKS]
    assert probe in checks[-1].detail
    assert f"connected to 127.0.0.1:{live.port}" in checks[2].detail
    assert "matches this kit's pin" in checks[3].detail


def test_coordinator_kit_checks_its_own_server(live: Live, tmp_path: Path) -> None:
    kit = _copy_kit(live.kits / "coordinator", tmp_path / "c", f"https://127.0.0.1:{live.port}")
    checks = doc.run_checks(kit, timeout=TIMEOUT)
    assert _statuses(checks) == [(n, "pass") for n in doc.CHECKS[:5]]  # no identity to test


# ── each failure, with its sentence ──────────────────────────────────────────────────────────


def test_not_a_kit(tmp_path: Path) -> None:
    check = _failed(doc.run_checks(tmp_path, timeout=TIMEOUT), doc.KIT)
    assert check.detail == f"{tmp_path} is not a medfed startup kit (it has no kit.toml)"
    assert "--kit" in check.fix


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_key_readable_by_others(live: Live, tmp_path: Path) -> None:
    kit = _kit_at(live, tmp_path, live.port)
    (kit / "identity.key").chmod(0o644)
    check = _failed(doc.run_checks(kit, timeout=TIMEOUT), doc.KIT)
    assert "can be read by other users" in check.detail
    assert f"chmod 600 {kit / 'identity.key'}" in check.fix


def test_damaged_kit(live: Live, tmp_path: Path) -> None:
    kit = _kit_at(live, tmp_path, live.port)
    shutil.copy(live.other / "sites" / "hospital-a" / "identity.pem", kit / "identity.pem")
    check = _failed(doc.run_checks(kit, timeout=TIMEOUT), doc.KIT)
    assert "identity.key does not belong to identity.pem" in check.detail
    assert check.fix == "copy the kit folder again from what the federation admin sent you"


def test_unresolvable_host(live: Live, tmp_path: Path) -> None:
    url = f"https://no-such-host.invalid:{live.port}"
    kit = _copy_kit(live.kit("sites", "hospital-a"), tmp_path / "k", url)
    check = _failed(doc.run_checks(kit, timeout=TIMEOUT), doc.RESOLVE)
    # a resolver that cannot reach any DNS server may time out instead of answering NXDOMAIN
    assert check.detail.startswith(
        "the coordinator's host name no-such-host.invalid does not resolve"
    ) or check.detail.startswith("resolving no-such-host.invalid took longer than")
    assert "DNS" in check.fix


def test_nothing_listening(live: Live, tmp_path: Path) -> None:
    with _listener() as sock:  # bound but not listening: connections are refused
        port = _port(sock)
        kit = _kit_at(live, tmp_path, port)
        check = _failed(doc.run_checks(kit, timeout=TIMEOUT), doc.TCP)
    assert check.detail == f"nothing accepts connections on 127.0.0.1:{port} (connection refused)"
    assert f"allow outbound HTTPS from this machine to 127.0.0.1:{port}" in check.fix


def test_server_of_another_federation(live: Live, tmp_path: Path) -> None:
    other = live.other / "coordinator"
    with _tls_server(other / "tls.pem", other / "tls.key") as port:
        check = _failed(doc.run_checks(_kit_at(live, tmp_path, port), timeout=TIMEOUT), doc.TLS)
    assert check.detail == (
        f"the server on 127.0.0.1:{port} has a certificate not issued by the federation's CA "
        "(it is another server, or a proxy intercepts HTTPS)"
    )
    assert "proxy or firewall inspects HTTPS" in check.fix


def test_certificate_that_is_not_the_pinned_one(live: Live, tmp_path: Path) -> None:
    ca_key = serialization.load_pem_private_key((live.kits / "ca" / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((live.kits / "ca" / "ca.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_server_certificate(
        ca_key, ca_cert, public_key=key.public_key(), hosts=["127.0.0.1"], consortium=CONSORTIUM
    )
    (tmp_path / "tls.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "tls.key").write_bytes(key_pem)
    with _tls_server(tmp_path / "tls.pem", tmp_path / "tls.key") as port:
        check = _failed(doc.run_checks(_kit_at(live, tmp_path, port), timeout=TIMEOUT), doc.TLS)
    assert "not the one pinned in this kit" in check.detail
    assert check.fix.startswith("do not proceed")


def test_server_without_tls(live: Live, tmp_path: Path) -> None:
    with _tls_server(None, None) as port:
        check = _failed(doc.run_checks(_kit_at(live, tmp_path, port), timeout=TIMEOUT), doc.TLS)
    assert check.detail.startswith(
        f"the server on 127.0.0.1:{port} did not complete a TLS handshake"
    )
    assert check.detail.endswith("it may not speak HTTPS")


def test_revoked_identity(live: Live, tmp_path: Path) -> None:
    with client_for_kit(load_kit(_kit_at(live, tmp_path, live.port, "admins", "alice"))) as admin:
        admin.post_json("/v1/participants/revoked-site/revoke", {"reason": "doctor test"})
    kit = _copy_kit(
        live.kit("sites", "revoked-site"), tmp_path / "r", f"https://127.0.0.1:{live.port}"
    )
    check = _failed(doc.run_checks(kit, timeout=TIMEOUT), doc.IDENTITY)
    assert check.detail == "this identity (revoked-site) has been revoked by the federation's admin"
    assert "new kit" in check.fix


def test_coordinator_trusting_another_ca(live: Live, tmp_path: Path) -> None:
    other_ca = (live.other / "ca" / "ca.pem").read_bytes()
    with _coordinator(live.kits, tmp_path / "state", trust_ca_pem=other_ca) as port:
        check = _failed(
            doc.run_checks(_kit_at(live, tmp_path, port), timeout=TIMEOUT), doc.IDENTITY
        )
    assert check.detail == (
        "this kit's identity was not signed by the federation's CA that the coordinator trusts"
    )
    assert check.fix.startswith("ask the federation admin for a new kit")


def test_clock_far_off_stops_before_the_identity(live: Live, tmp_path: Path) -> None:
    kit = _kit_at(live, tmp_path, live.port)
    check = _failed(doc.run_checks(kit, timeout=TIMEOUT, now=lambda: time.time() + 400), doc.CLOCK)
    assert check.detail.startswith("this machine's clock is 400 s ahead of the coordinator's")
    assert "NTP" in check.fix


def test_clock_slightly_off_warns_and_goes_on(live: Live, tmp_path: Path) -> None:
    kit = _kit_at(live, tmp_path, live.port)
    checks = doc.run_checks(kit, timeout=TIMEOUT, now=lambda: time.time() - 90)
    assert [c.status for c in checks] == ["pass"] * 4 + ["warn", "pass", "pass"]
    assert "90 s behind the coordinator's" in checks[4].detail


# ── the pure comparisons ─────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("offset", "status", "words"),
    [
        (0.0, "pass", "within 1 s"),
        (-59.0, "pass", "within 59 s"),
        (61.0, "warn", "61 s ahead of"),
        (-299.0, "warn", "299 s behind"),
        (301.0, "fail", "301 s ahead of"),
        (-3600.0, "fail", "3600 s behind"),
    ],
)
def test_clock_check(offset: float, status: str, words: str) -> None:
    check = doc.clock_check(server_time=1_700_000_000.0, local_time=1_700_000_000.0 + offset)
    assert check.status == status and words in check.detail
    assert (check.fix != "") == (status != "pass")


def test_certificate_expiry_check(live: Live) -> None:
    cert = x509.load_pem_x509_certificate(
        (live.kit("sites", "hospital-a") / "identity.pem").read_bytes()
    )
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    what, renew = "this kit's identity certificate", "ask for a new kit"

    def at(moment: float) -> doc.Check | None:
        return doc.certificate_expiry_check("x", what, cert, moment, renew=renew)

    assert at(start + 86400) is None
    soon = at(end - 10 * 86400)
    assert soon is not None and soon.status == "warn" and "in 10 days" in soon.detail
    gone = at(end + 1)
    assert gone is not None and gone.status == "fail" and gone.fix == renew
    assert gone.detail == f"{what} expired on {dt.datetime.fromtimestamp(end, dt.UTC):%Y-%m-%d}"
    early = at(start - 1)
    assert early is not None and early.status == "fail" and "NTP" in early.fix


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [
        (401, "stale timestamp", "because the clocks differ"),
        (401, "timestamp in the future", "because the clocks differ"),
        (401, "certificate belongs to another consortium", "another consortium"),
        (401, "certificate expired or not yet valid", "expired or not yet valid"),
        (401, "bad signature", "did not accept this kit's signature (bad signature)"),
        (403, "this needs a site identity", "refused bob as a researcher"),
        (500, "Internal Server Error", "HTTP 500"),
    ],
)
def test_identity_refusal(status: int, reason: str, words: str) -> None:
    check = doc.identity_refusal(status, reason, name="bob", role="researcher")
    assert check.status == "fail" and words in check.detail and check.fix


def test_sentence() -> None:
    check = doc.Check("x", False, "nothing accepts connections", "start it")
    assert check.sentence == "Nothing accepts connections; start it."


# ── the command ──────────────────────────────────────────────────────────────────────────────


def test_cli_all_good_exits_0(live: Live, tmp_path: Path) -> None:
    kit = _kit_at(live, tmp_path, live.port)
    result = CliRunner().invoke(doctor, ["--timeout", "5"], env={"MEDFED_KIT": str(kit)})
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == "all checks passed."
    assert sum(line.startswith("✓ ") for line in lines) == len(doc.CHECKS)


def test_cli_failure_exits_1_with_one_sentence(live: Live, tmp_path: Path) -> None:
    with _listener() as sock:
        port = _port(sock)
        kit = _kit_at(live, tmp_path, port)
        result = CliRunner().invoke(doctor, ["--kit", str(kit), "--timeout", "5"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"Nothing accepts connections on 127.0.0.1:{port}")
    assert lines[-1].endswith(f"allow outbound HTTPS from this machine to 127.0.0.1:{port}.")
    assert any(line.startswith("✗ TCP connection") for line in lines)
    assert sum("not checked" in line for line in lines) == len(doc.CHECKS) - 3


def test_cli_needs_a_kit() -> None:
    result = CliRunner().invoke(doctor, [], env={"MEDFED_KIT": None})
    assert result.exit_code == 2 and "--kit" in result.output
