"""Request signatures: every tampering, replay, stale clock and foreign identity is refused."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings, strategies as st

from medfed.errors import UsageError
from medfed.federation.identity import kits, pki
from medfed.federation.identity.signing import (
    CERT_HEADER,
    CONTENT_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AuthError,
    Identity,
    NonceCache,
    Principal,
    canonical_message,
    sign_request,
    verify_request,
)

CONSORTIUM = """\
name = "demo-consortium"
[coordinator]
host = "127.0.0.1"
port = 8443
[participants]
sites = ["hospital-a", "hospital-b"]
admins = ["alice"]
researchers = ["bob"]
"""
BODY = b'{"round": 3, "weights": "..."}'
PATH = "/v1/tasks/7/reply?attempt=2"


@dataclass
class Fed:
    out: Path
    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    site: Identity
    admin: Identity


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return ca, key


def _provision(folder: Path) -> Fed:
    (folder / "consortium.toml").write_text(CONSORTIUM)
    out = pki.provision(folder / "consortium.toml", folder / "out").out_dir
    ca, ca_key = _load_ca(out)
    site = Identity.from_kit(kits.load_kit(out / "sites" / "hospital-a"))
    admin = Identity.from_kit(kits.load_kit(out / "admins" / "alice"))
    return Fed(out, ca, ca_key, site, admin)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Fed:
    return _provision(tmp_path_factory.mktemp("fed"))


def verify(
    fed: Fed,
    headers: dict[str, str],
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes | None = BODY,
    now: float | None = None,
    cache: Callable[[str, str, float], bool] | None = None,
    **kwargs: Any,
) -> Principal:
    return verify_request(
        headers,
        method=method,
        path=path,
        body_sha256=None if body is None else hashlib.sha256(body).hexdigest(),
        ca_cert=kwargs.pop("ca_cert", fed.ca),
        consortium=kwargs.pop("consortium", "demo-consortium"),
        now=time.time() if now is None else now,
        remember_nonce=cache if cache is not None else NonceCache(),
        **kwargs,
    )


def signed(identity: Identity, **kwargs: Any) -> dict[str, str]:
    kwargs.setdefault("method", "POST")
    kwargs.setdefault("path", PATH)
    if "body_sha256" not in kwargs:
        kwargs.setdefault("body", BODY)
    return sign_request(identity, **kwargs)


def identity_with(
    fed: Fed,
    *,
    role: str = "site",
    name: str = "hospital-x",
    consortium: str = "demo-consortium",
    ca: bool = False,
    not_before: dt.datetime | None = None,
    days: int = 30,
    key: ed25519.Ed25519PrivateKey | None = None,
) -> Identity:
    """A test identity signed by the federation CA, with any subject and validity."""
    key = key or ed25519.Ed25519PrivateKey.generate()
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(fed.ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    cert = builder.sign(fed.ca_key, hashes.SHA256())
    return Identity(key, cert.public_bytes(serialization.Encoding.DER))


# ── the happy path ────────────────────────────────────────────────────────────────────────


def test_sign_and_verify(fed: Fed) -> None:
    headers = signed(fed.site)
    assert set(headers) == {
        CERT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, CONTENT_HEADER, SIGNATURE_HEADER,
    }  # fmt: skip
    assert len(bytes.fromhex(headers[NONCE_HEADER])) == 16
    assert headers[CONTENT_HEADER] == hashlib.sha256(BODY).hexdigest()
    p = verify(fed, headers)
    assert (p.name, p.role) == ("hospital-a", "site")
    assert p.fingerprint == fed.site.fingerprint
    assert p.not_after > dt.datetime.now(dt.UTC) + dt.timedelta(days=700)
    assert p.content_sha256 == headers[CONTENT_HEADER]


def test_header_names_are_case_insensitive(fed: Fed) -> None:
    headers = {k.lower(): v for k, v in signed(fed.admin).items()}
    assert verify(fed, headers).role == "admin"


def test_empty_body_streamed_hash_and_ca_as_bytes(fed: Fed) -> None:
    get = sign_request(fed.site, method="get", path="/v1/work?wait=30")
    verify(fed, get, method="GET", path="/v1/work?wait=30", body=b"")
    streamed = signed(fed.site, body_sha256=hashlib.sha256(BODY).hexdigest().upper())
    assert streamed[CONTENT_HEADER] == signed(fed.site)[CONTENT_HEADER]
    pem = fed.ca.public_bytes(serialization.Encoding.PEM)
    assert verify(fed, streamed, ca_cert=pem).name == "hospital-a"


def test_deferred_body_check_returns_the_signed_hash(fed: Fed) -> None:
    p = verify(fed, signed(fed.site), body=None)
    assert p.content_sha256 == hashlib.sha256(BODY).hexdigest()


def test_canonical_message_is_as_documented() -> None:
    message = canonical_message(
        method="post", path="/a?b=1", timestamp="1700000000", nonce="ab" * 16,
        body_sha256="0" * 64, cert_sha256="f" * 64,
    )  # fmt: skip
    expected = f"medfed-request-v1\nPOST\n/a?b=1\n1700000000\n{'ab' * 16}\n{'0' * 64}\n{'f' * 64}"
    assert message == expected.encode()


def test_signing_refuses_nonsense(fed: Fed) -> None:
    with pytest.raises(ValueError, match="not both"):
        sign_request(fed.site, method="POST", path="/", body=b"x", body_sha256="0" * 64)
    with pytest.raises(ValueError, match="64 hex"):
        sign_request(fed.site, method="POST", path="/", body_sha256="abc")
    with pytest.raises(ValueError, match="request target"):
        sign_request(fed.site, method="POST", path="/a\nb")
    coordinator = kits.load_coordinator_kit(fed.out / "coordinator")
    with pytest.raises(UsageError, match="no identity key"):
        Identity.from_kit(coordinator)


# ── refusals ──────────────────────────────────────────────────────────────────────────────


def refused(fed: Fed, headers: dict[str, str], needle: str, **kwargs: Any) -> None:
    with pytest.raises(AuthError, match=needle) as info:
        verify(fed, headers, **kwargs)
    assert info.value.reason == str(info.value)


def test_forged_signature(fed: Fed) -> None:
    headers = signed(fed.site)
    sig = bytearray(base64.b64decode(headers[SIGNATURE_HEADER]))
    sig[10] ^= 1
    refused(fed, headers | {SIGNATURE_HEADER: base64.b64encode(sig).decode()}, "bad signature")
    other_key = ed25519.Ed25519PrivateKey.generate()  # a signature by a key that is not the cert's
    forged = signed(Identity(other_key, fed.site.cert_der))
    refused(fed, forged, "bad signature")


def test_wrong_body(fed: Fed) -> None:
    refused(fed, signed(fed.site), "body does not match", body=BODY + b" ")
    headers = signed(fed.site)  # the attacker changes body and declared hash together
    headers[CONTENT_HEADER] = hashlib.sha256(b"evil").hexdigest()
    refused(fed, headers, "bad signature", body=b"evil")


def test_tampered_request_line(fed: Fed) -> None:
    headers = signed(fed.site)
    refused(fed, headers, "bad signature", path="/v1/tasks/8/reply?attempt=2")
    refused(fed, headers, "bad signature", path="/v1/tasks/7/reply")
    refused(fed, headers, "bad signature", method="PUT")


def test_replayed_nonce(fed: Fed) -> None:
    cache = NonceCache()
    headers = signed(fed.site)
    verify(fed, headers, cache=cache)
    refused(fed, headers, "replayed nonce", cache=cache)


def test_invalid_requests_do_not_burn_the_nonce(fed: Fed) -> None:
    cache = NonceCache()
    headers = signed(fed.site)
    refused(fed, headers, "bad signature", cache=cache, path="/elsewhere")
    refused(fed, headers, "body does not match", cache=cache, body=b"")
    refused(fed, headers, "revoked", cache=cache, is_revoked=lambda p: True)
    assert len(cache) == 0
    verify(fed, headers, cache=cache)


def test_stale_and_future_timestamps(fed: Fed) -> None:
    now = time.time()
    refused(fed, signed(fed.site, now=now - 301), "stale timestamp", now=now)
    refused(fed, signed(fed.site, now=now + 302), "timestamp in the future", now=now)
    verify(fed, signed(fed.site, now=now - 290), now=now)
    refused(fed, signed(fed.site, now=now - 50), "stale", now=now, max_skew=30)


def test_certificate_from_another_ca(fed: Fed, tmp_path: Path) -> None:
    other = _provision(tmp_path)  # same consortium name and participant names, another CA
    refused(fed, signed(other.site), "not issued by the federation CA")


def test_ca_certificate_used_as_identity(fed: Fed) -> None:
    headers = signed(fed.site)
    headers[CERT_HEADER] = base64.b64encode(
        fed.ca.public_bytes(serialization.Encoding.DER)
    ).decode()
    refused(fed, headers, "CA certificate")
    intermediate = identity_with(fed, ca=True)  # an Ed25519 CA cert that the CA itself signed
    refused(fed, signed(intermediate), "CA certificate")


@pytest.mark.parametrize("role", ["coordinator", "root", "Site", ""])
def test_role_outside_the_allowed_set(fed: Fed, role: str) -> None:
    refused(fed, signed(identity_with(fed, role=role)), "carries no medfed role")


def test_endpoint_can_narrow_roles(fed: Fed) -> None:
    refused(fed, signed(fed.site), "role 'site' may not", roles={"admin"})
    assert verify(fed, signed(fed.admin), roles={"admin"}).name == "alice"


def test_expired_and_not_yet_valid_certificates(fed: Fed) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    refused(fed, signed(identity_with(fed, not_before=past, days=30)), "expired")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    refused(fed, signed(identity_with(fed, not_before=future)), "not yet valid")
    key = ed25519.Ed25519PrivateKey.generate()
    old = pki.issue_identity_certificate(
        fed.ca_key, fed.ca, public_key=key.public_key(), name="hospital-old", role="site",
        consortium="demo-consortium", now=past, days=30,
    )  # fmt: skip
    old_identity = Identity(key, old.public_bytes(serialization.Encoding.DER))
    refused(fed, signed(old_identity), "expired")


def test_wrong_consortium(fed: Fed) -> None:
    refused(fed, signed(fed.site), "another consortium", consortium="other-consortium")
    refused(fed, signed(identity_with(fed, consortium="other-consortium")), "another consortium")
    assert verify(fed, signed(fed.site), consortium=None).name == "hospital-a"


def test_reissued_certificate_cannot_carry_an_old_signature(fed: Fed) -> None:
    """The same key certified twice (site, then admin): a captured site request cannot be
    re-presented under the admin certificate, because the signature covers the certificate."""
    key = ed25519.Ed25519PrivateKey.generate()
    as_site = identity_with(fed, role="site", key=key)
    as_admin = identity_with(fed, role="admin", key=key)
    headers = signed(as_site)
    headers[CERT_HEADER] = base64.b64encode(as_admin.cert_der).decode()
    refused(fed, headers, "bad signature")


def test_participant_added_later_verifies_with_the_unchanged_ca(tmp_path: Path) -> None:
    fed = _provision(tmp_path)
    ca_before = fed.ca.public_bytes(serialization.Encoding.PEM)
    path = pki.add_participant(fed.out, "hospital-late", "site")
    assert (fed.out / "ca" / "ca.pem").read_bytes() == ca_before
    late = Identity.from_kit(kits.load_kit(path))
    p = verify(fed, signed(late))
    assert (p.name, p.role) == ("hospital-late", "site")


@pytest.mark.parametrize(
    ("header", "value", "needle"),
    [
        (TIMESTAMP_HEADER, "-5", "malformed timestamp"),
        (TIMESTAMP_HEADER, "1e9", "malformed timestamp"),
        (TIMESTAMP_HEADER, "1" * 13, "too long"),
        (NONCE_HEADER, "ab" * 8, "malformed nonce"),
        (NONCE_HEADER, "AB" * 16, "malformed nonce"),
        (NONCE_HEADER, "a" * 129, "too long"),
        (CONTENT_HEADER, "z" * 64, "malformed content hash"),
        (SIGNATURE_HEADER, "not base64!", "not base64"),
        (SIGNATURE_HEADER, base64.b64encode(b"x" * 63).decode(), "malformed signature"),
        (CERT_HEADER, "A" * 5000, "too long"),
        (CERT_HEADER, base64.b64encode(b"not a certificate").decode(), "does not parse"),
    ],
)
def test_malformed_headers(fed: Fed, header: str, value: str, needle: str) -> None:
    refused(fed, signed(fed.site) | {header: value}, needle)


@pytest.mark.parametrize("header", [CERT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER])
def test_missing_header(fed: Fed, header: str) -> None:
    headers = signed(fed.site)
    del headers[header]
    refused(fed, headers, f"missing {header}")


def test_path_with_a_line_break_is_refused(fed: Fed) -> None:
    refused(fed, signed(fed.site), "malformed request line", path=PATH + "\nX")


# ── the nonce cache ───────────────────────────────────────────────────────────────────────


def test_nonce_cache_expires_and_is_bounded() -> None:
    clock = [1000.0]
    cache = NonceCache(max_entries=2, clock=lambda: clock[0])
    assert cache("fp", "n1", 1300.0)
    assert not cache("fp", "n1", 1300.0)
    assert cache("other-fp", "n1", 1300.0)  # nonces are per certificate
    with pytest.raises(AuthError, match="too many requests"):
        cache("fp", "n2", 1300.0)  # full: refuse rather than forget a live nonce
    clock[0] = 1301.0
    assert cache("fp", "n2", 1600.0)  # expired entries were dropped
    assert len(cache) == 1


# ── any single change makes verification fail ─────────────────────────────────────────────

FIELDS = ["method", "path", "body", *(h for h in (
    CERT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, CONTENT_HEADER, SIGNATURE_HEADER))]  # fmt: skip


def _flip(value: str, index: int, bit: int) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[index % len(raw)] ^= 1 << bit
    return base64.b64encode(bytes(raw)).decode()


def _other_hex(value: str, index: int, step: int) -> str:
    i = index % len(value)
    digit = format((int(value[i], 16) + step) % 16, "x")
    return value[:i] + digit + value[i + 1 :]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(FIELDS),
    index=st.integers(0, 10_000),
    bit=st.integers(0, 7),
    step=st.integers(1, 15),
    text=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
)
def test_any_single_change_is_refused(
    fed: Fed, field: str, index: int, bit: int, step: int, text: str
) -> None:
    now = time.time()
    headers = signed(fed.site, now=now)
    verify(fed, dict(headers), now=now)  # untouched, it passes
    request: dict[str, Any] = {"method": "POST", "path": PATH, "body": BODY}
    if field == "method":
        request["method"] = ["GET", "PUT", "DELETE", "PATCH"][step % 4]
    elif field == "path":
        request["path"] = PATH + "/" + text if text else "/"
    elif field == "body":
        request["body"] = BODY + text.encode() if text else b""
    elif field in (CERT_HEADER, SIGNATURE_HEADER):
        headers[field] = _flip(headers[field], index, bit)
    elif field == TIMESTAMP_HEADER:
        headers[field] = str(int(headers[field]) + (step if bit % 2 else -step))
    else:
        headers[field] = _other_hex(headers[field], index, step)
    with pytest.raises(AuthError):
        verify(fed, headers, now=now, **request)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)
)
def test_mangled_certificate_is_always_an_auth_error(
    fed: Fed, edits: list[tuple[int, int]]
) -> None:
    headers = signed(fed.site)
    der = bytearray(fed.site.cert_der)
    for index, value in edits:
        der[index % len(der)] = value
    headers[CERT_HEADER] = base64.b64encode(bytes(der)).decode()
    if bytes(der) == fed.site.cert_der:
        assert verify(fed, headers).name == "hospital-a"
    else:
        with pytest.raises(AuthError):
            verify(fed, headers)
