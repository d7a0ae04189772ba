"""``medfed doctor``: is this machine ready to talk to its federation, and if not, what is wrong?

The checks run in the order a connection is built, and each needs the one before it, so the
first failure stops the rest (there is no TLS to check when TCP failed)::

    1 startup kit            load_kit: files present, key matches certificate, key not readable
                             by other users, coordinator_url has a host and a port
    2 name resolution        getaddrinfo(host) of the coordinator URL
    3 TCP connection         connect to host:port within the timeout
    4 TLS certificate        handshake trusting only the kit's CA (host name checked), the
                             certificate's sha256 equals the kit's pin, it is not about to expire
    5 clock                  GET /v1/health: the server's ``time`` against this machine's clock
                             (signed requests more than 300 s off are refused)
    6 identity certificate   this kit's own certificate is within its validity window
    7 identity accepted      a signed request that needs this participant's role is accepted

Every check returns a :class:`Check` whose ``detail`` says in one clause what was found and,
when something is wrong, ``fix`` says in one clause what to do next. Warnings (a clock 60-300 s
off, a certificate that expires within 30 days) do not stop the checks.

The checks connect directly, the way the TCP check does; they do not go through an HTTPS proxy
set in the environment. The identity check of a site polls ``GET /v1/work?wait=0``: if the site
has an open task, it is marked delivered again (the node receives it again on its next poll).
The coordinator's own kit has no participant identity: checks 6 and 7 do not apply to it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from medfed.errors import MedfedError

__all__ = [
    "CHECKS",
    "EXPIRY_WARN_DAYS",
    "MAX_SKEW",
    "WARN_SKEW",
    "Check",
    "certificate_expiry_check",
    "clock_check",
    "identity_refusal",
    "iter_checks",
    "run_checks",
]

MAX_SKEW = 300.0  # seconds; what the coordinator accepts in a signed request's timestamp
WARN_SKEW = 60.0
EXPIRY_WARN_DAYS = 30

KIT, RESOLVE, TCP, TLS, CLOCK, IDENTITY_CERT, IDENTITY = (
    "startup kit",
    "name resolution",
    "TCP connection",
    "TLS certificate",
    "clock",
    "identity certificate",
    "identity accepted",
)
CHECKS = (KIT, RESOLVE, TCP, TLS, CLOCK, IDENTITY_CERT, IDENTITY)

# the cheapest signed request each role may make (the site's long-poll returns at once)
PROBE = {"site": "/v1/work?wait=0", "researcher": "/v1/jobs", "admin": "/v1/participants"}

Clock = Callable[[], float]


@dataclass(frozen=True)
class Check:
    """One check's outcome. ``ok`` with ``warning`` is a pass that needs attention soon."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False

    @property
    def status(self) -> str:
        """``"pass"``, ``"warn"`` or ``"fail"``."""
        return "fail" if not self.ok else "warn" if self.warning else "pass"

    @property
    def sentence(self) -> str:
        """The detail and the fix as one sentence."""
        text = self.detail[:1].upper() + self.detail[1:]
        return f"{text}; {self.fix}." if self.fix else f"{text}."


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d")


# ── pure comparisons (tested directly) ──────────────────────────────────────────────────────


def clock_check(server_time: float, local_time: float) -> Check:
    """Compare the coordinator's clock with this machine's (both unix seconds)."""
    skew = local_time - server_time
    off = abs(skew)
    way = "ahead of" if skew > 0 else "behind"
    fix = "set the system clock (turn on NTP time synchronisation) and run medfed doctor again"
    if off > MAX_SKEW:
        return _fail(
            CLOCK,
            f"this machine's clock is {off:.0f} s {way} the coordinator's, more than the "
            f"{MAX_SKEW:.0f} s it accepts in a signed request",
            fix,
        )
    if off > WARN_SKEW:
        return Check(
            CLOCK,
            True,
            f"this machine's clock is {off:.0f} s {way} the coordinator's (signed requests are "
            f"refused beyond {MAX_SKEW:.0f} s)",
            fix,
            warning=True,
        )
    within = f"this machine's clock is within {max(off, 1):.0f} s of the coordinator's"
    return Check(CLOCK, True, within)


def certificate_expiry_check(
    name: str, what: str, cert: x509.Certificate, now: float, *, renew: str
) -> Check | None:
    """A failure or warning if ``cert`` is outside or near the end of its validity, else None.

    ``what`` names the certificate in the sentence; ``renew`` is the fix when it (nearly) expired.
    """
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if moment < start:
        return _fail(
            name,
            f"{what} is valid only from {start:%Y-%m-%d %H:%M} UTC, and this machine's clock "
            "says it is earlier",
            "set the system clock (turn on NTP time synchronisation)",
        )
    if moment > end:
        return _fail(name, f"{what} expired on {_day(end)}", renew)
    left = end - moment
    if left < dt.timedelta(days=EXPIRY_WARN_DAYS):
        return Check(
            name, True, f"{what} expires on {_day(end)}, in {left.days} days", renew, warning=True
        )
    return None


def identity_refusal(status: int, reason: str, *, name: str, role: str) -> Check:
    """Why the coordinator refused this kit's signed request (HTTP ``status``, its ``reason``)."""
    new_kit = "ask the federation admin for a new kit"
    if status == 401:
        if "timestamp" in reason:
            return _fail(
                IDENTITY,
                f"the coordinator refused the signature because the clocks differ ({reason})",
                "set the system clock (turn on NTP time synchronisation)",
            )
        if "not issued by the federation CA" in reason:
            return _fail(
                IDENTITY,
                "this kit's identity was not signed by the federation's CA that the coordinator "
                "trusts",
                f"{new_kit} (this one belongs to another or an older federation)",
            )
        if "another consortium" in reason:
            return _fail(
                IDENTITY, "this kit belongs to another consortium than the coordinator's", new_kit
            )
        if "expired or not yet valid" in reason:
            return _fail(
                IDENTITY,
                "the coordinator finds this kit's identity certificate expired or not yet valid",
                f"{new_kit}, or set the system clock if it is wrong",
            )
        return _fail(
            IDENTITY, f"the coordinator did not accept this kit's signature ({reason})", new_kit
        )
    if status == 403 and "revoked" in reason:
        return _fail(
            IDENTITY,
            f"this identity ({name}) has been revoked by the federation's admin",
            "ask the federation admin why, and for a new kit if this participant should take "
            "part again",
        )
    if status == 403:
        return _fail(
            IDENTITY,
            f"the coordinator refused {name} as a {role} ({reason})",
            "ask the federation admin to check which role this kit was issued for",
        )
    return _fail(
        IDENTITY,
        f"the coordinator answered a signed request with HTTP {status} ({reason})",
        "tell the federation admin: the coordinator's log says why",
    )


# ── the checks ──────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class _Target:
    host: str
    port: int

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _check_kit(path: Path) -> tuple[Check, Any, _Target | None]:
    from medfed.federation.identity.kits import load_kit

    if not (path / "kit.toml").is_file() and not (path.name == "kit.toml" and path.is_file()):
        return (
            _fail(
                KIT,
                f"{path} is not a medfed startup kit (it has no kit.toml)",
                "point --kit (or MEDFED_KIT) at the folder the federation admin sent you",
            ),
            None,
            None,
        )
    folder = path.parent if path.name == "kit.toml" else path
    for key in (folder / "identity.key", folder / "tls.key"):
        try:
            mode = key.stat().st_mode
        except OSError:
            continue
        if os.name == "posix" and mode & 0o077:
            fix = f"run `chmod 600 {key}` so that only the account running medfed can read it"
            return _fail(KIT, f"the key {key} can be read by other users", fix), None, None
    try:
        kit = load_kit(folder)
    except (MedfedError, OSError) as exc:
        detail, _, fix = str(exc).partition("; ")
        if not fix or fix.startswith("re-copy"):
            fix = "copy the kit folder again from what the federation admin sent you"
        return _fail(KIT, detail, fix), None, None
    try:
        url = urlsplit(kit.coordinator_url)
        host, port = url.hostname, url.port or 443
    except ValueError:
        host, port = None, 0
    if not host:
        return (
            _fail(
                KIT,
                f"coordinator_url {kit.coordinator_url!r} in {folder}/kit.toml has no valid "
                "host and port",
                "ask the federation admin for a correct kit",
            ),
            None,
            None,
        )
    who = "the coordinator" if kit.role == "coordinator" else f"{kit.name} ({kit.role})"
    ok = Check(KIT, True, f"{who} of {kit.consortium}, coordinator {kit.coordinator_url}")
    return ok, kit, _Target(host, port)


def _resolve(target: _Target, timeout: float) -> tuple[Check, list[Any]]:
    found: list[Any] = []
    errors: list[BaseException] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            errors.append(exc)

    worker = threading.Thread(target=lookup, name="medfed-doctor-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    fix = (
        f"check coordinator_url in kit.toml, or ask your IT why {target.host} does not resolve "
        "on this machine (DNS)"
    )
    if worker.is_alive():
        detail = f"resolving {target.host} took longer than {timeout:g} s"
        return _fail(RESOLVE, detail, "ask your IT to check this machine's DNS servers"), []
    if errors or not found:
        why = (getattr(errors[0], "strerror", None) or str(errors[0])) if errors else "no address"
        detail = f"the coordinator's host name {target.host} does not resolve ({why})"
        return _fail(RESOLVE, detail, fix), []
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if addresses == [target.host]:
        return Check(RESOLVE, True, f"{target.host} is an IP address (nothing to resolve)"), found
    shown = ", ".join(addresses[:3]) + (", …" if len(addresses) > 3 else "")
    return Check(RESOLVE, True, f"{target.host} resolves to {shown}"), found


def _connect(info: Any, timeout: float) -> socket.socket:
    family, kind, proto, _, sockaddr = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp(target: _Target, infos: list[Any], timeout: float) -> tuple[Check, Any]:
    allow = f"ask your IT to allow outbound HTTPS from this machine to {target.where}"
    last: OSError | None = None
    for info in infos:
        started = time.monotonic()
        try:
            _connect(info, timeout).close()
        except OSError as exc:
            last = exc
            continue
        ms = (time.monotonic() - started) * 1000
        detail = f"connected to {target.where} ({info[4][0]}) in {ms:.0f} ms"
        return Check(TCP, True, detail), info
    if isinstance(last, ConnectionRefusedError):
        return _fail(
            TCP,
            f"nothing accepts connections on {target.where} (connection refused)",
            f"check that the coordinator is running on port {target.port} and that "
            f"coordinator_url is right, or {allow}",
        ), None
    if isinstance(last, TimeoutError):
        return _fail(
            TCP,
            f"connecting to {target.where} timed out after {timeout:g} s (a firewall is "
            "probably dropping the traffic)",
            allow,
        ), None
    why = getattr(last, "strerror", None) or str(last)
    return _fail(TCP, f"cannot reach {target.where} ({why})", allow), None


def _tls_context(kit: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=kit.ca_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _tls(kit: Any, target: _Target, info: Any, timeout: float, now: Clock) -> Check:
    ask_it = (
        f"ask your IT whether a proxy or firewall inspects HTTPS to {target.where} (it must "
        "pass through untouched), and check coordinator_url in kit.toml"
    )
    try:
        sock = _connect(info, timeout)
    except OSError as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        return _fail(TLS, f"could not connect again to {target.where} ({why})", ask_it)
    try:
        with _tls_context(kit).wrap_socket(sock, server_hostname=target.host) as tls:
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return _verification_failure(exc, target, ask_it)
    except ssl.SSLError as exc:
        return _fail(
            TLS,
            f"the server on {target.where} did not complete a TLS handshake ({exc.reason or exc}):"
            " it may not speak HTTPS",
            f"check the port in coordinator_url, or ask your IT whether a proxy or firewall "
            f"interferes with HTTPS to {target.where}",
        )
    except TimeoutError:
        return _fail(TLS, f"the TLS handshake with {target.where} timed out", ask_it)
    except OSError as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        return _fail(
            TLS, f"the connection to {target.where} broke during the TLS handshake ({why})", ask_it
        )
    finally:
        sock.close()
    if der is None:  # pragma: no cover - a verified handshake always has a peer certificate
        return _fail(TLS, f"the server on {target.where} sent no certificate", ask_it)
    pin = hashlib.sha256(der).hexdigest()
    if pin != kit.server_pin:
        return _fail(
            TLS,
            f"the server on {target.where} has a certificate from the federation's CA, but not "
            "the one pinned in this kit",
            "do not proceed: ask the federation admin whether the coordinator's certificate was "
            "replaced (you then need a new kit)",
        )
    cert = x509.load_der_x509_certificate(der)
    renew = "tell the federation admin to renew the coordinator's certificate"
    problem = certificate_expiry_check(
        TLS, "the coordinator's certificate", cert, now(), renew=renew
    )
    if problem is not None:
        return problem
    return Check(
        TLS,
        True,
        f"the certificate chains to the federation CA, matches this kit's pin and is valid "
        f"until {_day(cert.not_valid_after_utc)} ({version})",
    )


def _verification_failure(exc: ssl.SSLCertVerificationError, target: _Target, ask_it: str) -> Check:
    code, message = exc.verify_code, exc.verify_message or str(exc)
    if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        return _fail(
            TLS,
            f"the server on {target.where} has a certificate from the federation's CA, but for "
            f"another name than {target.host}",
            "check coordinator_url in kit.toml against the address the federation admin gave",
        )
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return _fail(
            TLS,
            "the coordinator's certificate has expired (or this machine's clock is far ahead)",
            "tell the federation admin to renew it, and check the system clock",
        )
    if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
        return _fail(
            TLS,
            "the coordinator's certificate is not valid yet: this machine's clock is behind",
            "set the system clock (turn on NTP time synchronisation)",
        )
    if code in (2, 18, 19, 20, 21):  # no issuer / self-signed: another CA signed it
        return _fail(
            TLS,
            f"the server on {target.where} has a certificate not issued by the federation's CA "
            "(it is another server, or a proxy intercepts HTTPS)",
            ask_it,
        )
    return _fail(TLS, f"the certificate of {target.where} is not valid ({message})", ask_it)


def _http(kit: Any, target: _Target, timeout: float) -> httpx.Client:
    base = f"https://{target.where}"
    return httpx.Client(
        base_url=base,
        verify=_tls_context(kit),
        timeout=timeout,
        trust_env=False,  # the same direct path as the TCP and TLS checks
        follow_redirects=False,
    )


def _pinned(response: httpx.Response, pin: str) -> bool:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    der = ssl_object.getpeercert(True) if ssl_object is not None else None
    return der is not None and hashlib.sha256(der).hexdigest() == pin


def _not_pinned(name: str, target: _Target) -> Check:
    return _fail(
        name,
        f"a second connection to {target.where} reached a server without the pinned certificate",
        "do not proceed: ask the federation admin",
    )


def _unreachable(name: str, target: _Target, exc: Exception) -> Check:
    return _fail(
        name,
        f"the request to {target.where} failed ({type(exc).__name__}: {exc})",
        "run medfed doctor again; if it persists, tell the federation admin",
    )


def _clock(kit: Any, target: _Target, http: httpx.Client, now: Clock) -> Check:
    not_medfed = "check coordinator_url in kit.toml (host and port of the medfed coordinator)"
    try:
        before = now()
        response = http.get("/v1/health")
        after = now()
    except httpx.HTTPError as exc:
        return _unreachable(CLOCK, target, exc)
    if not _pinned(response, kit.server_pin):
        return _not_pinned(CLOCK, target)
    try:
        body = response.json()
        server_time = float(body["time"])
        consortium = body.get("consortium")
    except (ValueError, TypeError, KeyError, AttributeError):
        return _fail(
            CLOCK,
            f"{target.where} answered /v1/health with HTTP {response.status_code} but no "
            "medfed health report",
            not_medfed,
        )
    if consortium != kit.consortium:
        return _fail(
            CLOCK,
            f"the coordinator on {target.where} serves consortium {consortium!r}, but this kit "
            f"belongs to {kit.consortium!r}",
            not_medfed,
        )
    return clock_check(server_time, (before + after) / 2)


def _identity_cert(kit: Any, now: Clock) -> Check:
    cert = x509.load_pem_x509_certificate(kit.cert_pem)
    problem = certificate_expiry_check(
        IDENTITY_CERT,
        "this kit's identity certificate",
        cert,
        now(),
        renew="ask the federation admin for a new kit",
    )
    if problem is not None:
        return problem
    return Check(
        IDENTITY_CERT,
        True,
        f"{kit.name} ({kit.role}) of {kit.consortium}, valid until "
        f"{_day(cert.not_valid_after_utc)}",
    )


def _identity(kit: Any, target: _Target, http: httpx.Client, now: Clock) -> Check:
    from medfed.federation.identity.signing import Identity, sign_request

    path = PROBE[kit.role]
    headers = sign_request(Identity.from_kit(kit), method="GET", path=path, now=now())
    try:
        response = http.get(path, headers=headers)
    except httpx.HTTPError as exc:
        return _unreachable(IDENTITY, target, exc)
    if not _pinned(response, kit.server_pin):
        return _not_pinned(IDENTITY, target)
    if response.status_code >= 400:
        try:
            reason = str(response.json().get("detail", response.text))
        except (ValueError, AttributeError):
            reason = response.text[:200]
        return identity_refusal(response.status_code, reason, name=kit.name, role=kit.role)
    return Check(
        IDENTITY,
        True,
        f"the coordinator accepts a request signed by {kit.name} as a {kit.role} (GET {path})",
    )


def iter_checks(
    kit_path: str | os.PathLike[str], *, timeout: float = 10.0, now: Clock = time.time
) -> Iterator[Check]:
    """Run the checks in order and yield each result; stop after the first failure.

    ``timeout`` bounds each network step (seconds); ``now`` is this machine's clock (unix
    seconds), replaceable to test the clock comparison.
    """
    kit_check, kit, target = _check_kit(Path(kit_path))
    yield kit_check
    if kit is None or target is None:
        return
    check, infos = _resolve(target, timeout)
    yield check
    if not check.ok:
        return
    check, info = _tcp(target, infos, timeout)
    yield check
    if not check.ok:
        return
    check = _tls(kit, target, info, timeout, now)
    yield check
    if not check.ok:
        return
    with _http(kit, target, timeout) as http:
        check = _clock(kit, target, http, now)
        yield check
        if not check.ok or kit.role not in PROBE:  # the coordinator's kit has no identity
            return
        check = _identity_cert(kit, now)
        yield check
        if not check.ok:
            return
        yield _identity(kit, target, http, now)


def run_checks(
    kit_path: str | os.PathLike[str], *, timeout: float = 10.0, now: Clock = time.time
) -> list[Check]:
    """Every check that ran, in order (see :func:`iter_checks`)."""
    return list(iter_checks(kit_path, timeout=timeout, now=now))
