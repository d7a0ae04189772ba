"""Every request proves who sent it: an Ed25519 signature over the request, by a federation key.

Pure: no I/O, no clock unless given one. A request carries five headers::

    X-Medfed-Cert            base64 (standard, padded) of the sender's DER identity certificate
    X-Medfed-Timestamp       unix seconds, decimal digits only
    X-Medfed-Nonce           32-128 lowercase hex characters (the signer draws 128 random bits)
    X-Medfed-Content-SHA256  64 lowercase hex characters: sha256 of the body bytes ("" if none)
    X-Medfed-Signature       base64 of the 64-byte Ed25519 signature of the canonical message

The canonical message is the UTF-8 of these seven lines joined by ``\\n`` (no final newline)::

    medfed-request-v1
    METHOD                   upper case, e.g. POST
    /path?query              the request target exactly as sent (percent-encoding untouched)
    timestamp                as in the header
    nonce                    as in the header
    body sha256              as in the header
    certificate sha256       hex sha256 of the DER certificate in X-Medfed-Cert

The last line binds the signature to one certificate, and through it to the consortium, name and
role that certificate carries: a captured request cannot be re-presented under another
certificate for the same key (a renewed or re-issued one, another role, another federation), and
nonces, which the coordinator remembers per certificate, cannot be replayed that way either.

``verify_request`` checks, cheapest first: headers present and bounded, well-formed, timestamp
within ``max_skew``, body hash, certificate parses, is no CA, names an allowed role of this
consortium and is within its validity window, Ed25519 signature, certificate issued by the
federation CA, not revoked (when the caller passes ``is_revoked``) and, last, the nonce is new:
only a request that passed everything else can use up a nonce. Each refusal raises
:class:`AuthError` with a short reason that is safe to return to the client (HTTP 401).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import heapq
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medfed.errors import UsageError

if TYPE_CHECKING:
    from medfed.federation.identity.kits import Kit

__all__ = [
    "CERT_HEADER",
    "CONTENT_HEADER",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AuthError",
    "Identity",
    "NonceCache",
    "Principal",
    "canonical_message",
    "sha256_hex",
    "sign_request",
    "verify_certificate",
    "verify_request",
]

CERT_HEADER = "X-Medfed-Cert"
TIMESTAMP_HEADER = "X-Medfed-Timestamp"
NONCE_HEADER = "X-Medfed-Nonce"
CONTENT_HEADER = "X-Medfed-Content-SHA256"
SIGNATURE_HEADER = "X-Medfed-Signature"
VERSION = "medfed-request-v1"
ROLES = ("site", "admin", "researcher")  # the same as medfed.federation.identity.pki.ROLES

_MAX_LEN = {  # header → longest accepted value (characters)
    CERT_HEADER: 4096,  # our identity certificates are ~640 characters of base64
    TIMESTAMP_HEADER: 12,
    NONCE_HEADER: 128,
    CONTENT_HEADER: 64,
    SIGNATURE_HEADER: 88,
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[0-9a-f]{32,128}")
_DIGITS = re.compile(r"[0-9]{1,12}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_TARGET = re.compile(r"/[\x21-\x7e]{0,8191}")  # printable ASCII, no spaces or line breaks
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class AuthError(Exception):
    """A request's identity could not be established; ``reason`` says why (maps to HTTP 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """What a participant signs with: its Ed25519 key and its DER identity certificate."""

    private_key: ed25519.Ed25519PrivateKey = field(repr=False)
    cert_der: bytes = field(repr=False)

    @classmethod
    def from_kit(cls, kit: Kit) -> Identity:
        if kit.identity_key is None:
            raise UsageError(f"{kit.path} holds no identity key; sign with a participant's kit")
        cert = x509.load_pem_x509_certificate(kit.cert_pem)
        return cls(kit.identity_key, cert.public_bytes(serialization.Encoding.DER))

    @property
    def fingerprint(self) -> str:
        return sha256_hex(self.cert_der)


@dataclass(frozen=True)
class Principal:
    """Who a verified request came from."""

    name: str
    role: str
    fingerprint: str  # sha256 hex of the identity certificate's DER
    not_after: dt.datetime  # the certificate's end of validity (UTC)
    content_sha256: str  # the body hash the sender signed


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_message(
    *, method: str, path: str, timestamp: str, nonce: str, body_sha256: str, cert_sha256: str
) -> bytes:
    """The bytes that are signed (see the module docstring)."""
    lines = (VERSION, method.upper(), path, timestamp, nonce, body_sha256, cert_sha256)
    return "\n".join(lines).encode("utf-8")


def sign_request(
    identity: Identity,
    *,
    method: str,
    path: str,
    body: bytes | None = None,
    body_sha256: str | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """The five headers that prove ``identity`` sent this request.

    Give the body, or its sha256 (hex) when it is streamed; neither means an empty body.
    ``path`` is the request target exactly as it goes on the wire, query string included.
    """
    if body is not None and body_sha256 is not None:
        raise ValueError("give body or body_sha256, not both")
    digest = sha256_hex(body or b"") if body_sha256 is None else body_sha256.lower()
    if not _HEX64.fullmatch(digest):
        raise ValueError("body_sha256 must be 64 hex characters")
    method = method.upper()
    if not _METHOD.fullmatch(method) or not _TARGET.fullmatch(path):
        raise ValueError(f"cannot sign {method!r} {path!r}: not an HTTP method and request target")
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    message = canonical_message(
        method=method, path=path, timestamp=timestamp, nonce=nonce, body_sha256=digest,
        cert_sha256=identity.fingerprint,
    )  # fmt: skip
    return {
        CERT_HEADER: base64.b64encode(identity.cert_der).decode("ascii"),
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        CONTENT_HEADER: digest,
        SIGNATURE_HEADER: base64.b64encode(identity.private_key.sign(message)).decode("ascii"),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:  # a plain dict with other capitalisation
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    if value is None:
        raise AuthError(f"missing {name} header")
    if len(value) > _MAX_LEN[name]:
        raise AuthError(f"{name} header too long")
    return value


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise AuthError(f"{name} header is not base64") from None


def _one(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise AuthError("certificate subject is not a medfed identity")
    return values[0].value


@functools.lru_cache(maxsize=8)
def _ca(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _identity(
    der: bytes, roles: Collection[str], consortium: str | None, moment: dt.datetime
) -> tuple[x509.Certificate, ed25519.Ed25519PublicKey, str, str]:
    """The identity certificate's key, name and role, if it is one we accept (no CA check)."""
    cert = x509.load_der_x509_certificate(der)
    constraints = _extension(cert, x509.BasicConstraints)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise AuthError("a CA certificate is not an identity")
    public_key = cert.public_key()
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise AuthError("certificate key is not Ed25519")
    role, name = _one(cert, NameOID.ORGANIZATIONAL_UNIT_NAME), _one(cert, NameOID.COMMON_NAME)
    if role not in ROLES:
        raise AuthError("certificate carries no medfed role")
    if role not in roles:
        raise AuthError(f"role {role!r} may not make this request")
    if not _NAME.fullmatch(name):
        raise AuthError("certificate names no valid participant")
    if consortium is not None and _one(cert, NameOID.ORGANIZATION_NAME) != consortium:
        raise AuthError("certificate belongs to another consortium")
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise AuthError("certificate expired or not yet valid")
    usage = _extension(cert, x509.KeyUsage)
    if not isinstance(usage, x509.KeyUsage) or not usage.digital_signature:
        raise AuthError("certificate may not sign")
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if not isinstance(eku, x509.ExtendedKeyUsage) or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise AuthError("certificate is not a client identity")
    return cert, public_key, name, role


def verify_certificate(
    der: bytes,
    *,
    ca_cert: x509.Certificate | bytes,
    consortium: str | None,
    now: float,
    roles: Collection[str] = ROLES,
) -> tuple[str, str, ed25519.Ed25519PublicKey]:
    """The name, role and Ed25519 key of an identity certificate, or :class:`AuthError`.

    The same checks as :func:`verify_request` makes of a request's certificate: an identity
    (no CA) of an allowed role and of this consortium, valid at ``now``, that may sign, and
    issued by the federation CA ``ca_cert``.
    """
    ca_cert = _ca(ca_cert) if isinstance(ca_cert, bytes) else ca_cert
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        cert, public_key, name, role = _identity(der, roles, consortium, moment)
    except AuthError:
        raise
    except Exception:  # fail closed, as verify_request does
        raise AuthError("certificate does not parse") from None
    if not ca_cert.not_valid_before_utc <= moment <= ca_cert.not_valid_after_utc:
        raise AuthError("federation CA expired or not yet valid")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:
        raise AuthError("certificate not issued by the federation CA") from None
    return name, role, public_key


def verify_request(
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    body_sha256: str | None,
    ca_cert: x509.Certificate | bytes,
    consortium: str | None,
    now: float,
    max_skew: float = 300,
    remember_nonce: Callable[[str, str, float], bool],
    roles: Collection[str] = ROLES,
    is_revoked: Callable[[Principal], bool] | None = None,
) -> Principal:
    """Who sent this request, or :class:`AuthError`.

    ``ca_cert`` is the federation CA (a certificate, or its PEM or DER bytes).
    ``body_sha256`` is the hash of the body the server received. Pass ``None`` only when the
    body is streamed after this check: the caller must then compare its hash with
    ``Principal.content_sha256`` before using the body. ``consortium=None`` skips the consortium
    check; ``roles`` narrows who may call (e.g. ``{"admin"}``). ``remember_nonce(fingerprint,
    nonce, expires_at)`` returns False when it has seen the nonce (a replay); it is called last.
    """
    values = {name: _header(headers, name) for name in _MAX_LEN}
    timestamp, nonce = values[TIMESTAMP_HEADER], values[NONCE_HEADER]
    declared = values[CONTENT_HEADER]
    if not _DIGITS.fullmatch(timestamp):
        raise AuthError("malformed timestamp")
    if not _NONCE.fullmatch(nonce):
        raise AuthError("malformed nonce")
    if not _HEX64.fullmatch(declared):
        raise AuthError("malformed content hash")
    method = method.upper()
    if not _METHOD.fullmatch(method) or not _TARGET.fullmatch(path):
        raise AuthError("malformed request line")
    if int(timestamp) < now - max_skew:
        raise AuthError("stale timestamp")
    if int(timestamp) > now + max_skew:
        raise AuthError("timestamp in the future")
    if body_sha256 is not None and not hmac.compare_digest(declared, body_sha256.lower()):
        raise AuthError("body does not match its signed hash")
    signature = _b64(values[SIGNATURE_HEADER], SIGNATURE_HEADER)
    if len(signature) != 64:
        raise AuthError("malformed signature")

    der = _b64(values[CERT_HEADER], CERT_HEADER)
    ca_cert = _ca(ca_cert) if isinstance(ca_cert, bytes) else ca_cert
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        cert, public_key, name, role = _identity(der, roles, consortium, moment)
    except AuthError:
        raise
    except Exception:  # fail closed: any malformed DER, duplicate extension, odd key type …
        raise AuthError("certificate does not parse") from None
    if not ca_cert.not_valid_before_utc <= moment <= ca_cert.not_valid_after_utc:
        raise AuthError("federation CA expired or not yet valid")

    fingerprint = sha256_hex(der)
    message = canonical_message(
        method=method, path=path, timestamp=timestamp, nonce=nonce, body_sha256=declared,
        cert_sha256=fingerprint,
    )  # fmt: skip
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise AuthError("bad signature") from None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # InvalidSignature, another issuer name, an unsupported algorithm …
        raise AuthError("certificate not issued by the federation CA") from None

    principal = Principal(name, role, fingerprint, cert.not_valid_after_utc, declared)
    if is_revoked is not None and is_revoked(principal):
        raise AuthError("certificate revoked")
    if not remember_nonce(fingerprint, nonce, int(timestamp) + max_skew):
        raise AuthError("replayed nonce")
    return principal


class NonceCache:
    """Remembers (certificate, nonce) pairs until they expire; usable as ``remember_nonce``.

    Thread-safe and bounded: when ``max_entries`` unexpired nonces are held, new requests are
    refused (fail closed) rather than forgetting a nonce that could then be replayed. Only
    requests that passed every other check reach it. ``clock`` must be the clock whose
    ``now`` the caller passes to :func:`verify_request`.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def __call__(self, fingerprint: str, nonce: str, expires_at: float) -> bool:
        key = (fingerprint, nonce)
        with self._lock:
            if key in self._seen:
                return False
            now = self._clock()
            while self._expiry and self._expiry[0][0] < now:
                _, old = heapq.heappop(self._expiry)
                self._seen.pop(old, None)
            if len(self._seen) >= self.max_entries:
                raise AuthError("too many requests; retry in a few minutes")
            self._seen[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, key))
            return True
