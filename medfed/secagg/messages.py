"""The stages of a round and the messages exchanged in each, as plain dataclasses.

Every message carries the job id and the round, and maps to a JSON-safe dict with
``to_json()`` (bytes as base64 strings) and back with :func:`message_from_json`, which checks
every key and type and raises :class:`ProtocolViolation` on anything else. The one bulky payload,
a :class:`MaskedInput`'s vector, is not in the dict: the caller sends ``message.vector`` (a
little-endian unsigned array) as a binary body and passes it back as ``vector=``.

=================  =========================  ==========================
stage              coordinator → site         site → coordinator
=================  =========================  ==========================
ADVERTISE_KEYS     AdvertiseRequest           KeyAdvertisement (signed)
SHARE_KEYS         ShareKeysRequest           ShareKeysReply
MASKED_INPUT       MaskedInputRequest         MaskedInput
CONSISTENCY_CHECK  ConsistencyRequest         ConsistencySignature
UNMASK             UnmaskRequest              UnmaskReply
=================  =========================  ==========================
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from medfed.secagg.errors import ProtocolViolation
from medfed.secagg.masking import encode_fields

__all__ = [
    "AdvertiseRequest",
    "ConsistencyRequest",
    "ConsistencySignature",
    "KeyAdvertisement",
    "MaskedInput",
    "MaskedInputRequest",
    "Message",
    "ShareKeysReply",
    "ShareKeysRequest",
    "Stage",
    "UnmaskReply",
    "UnmaskRequest",
    "advertisement_payload",
    "message_from_json",
    "survivors_payload",
]


class Stage(enum.StrEnum):
    """The stages of a round, in order; a round ends DONE or ABORTED."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


def advertisement_payload(
    *, job: str, round: int, site: str, mask_key: bytes, share_key: bytes
) -> bytes:
    """The bytes a site signs with its identity key to vouch for its two public keys."""
    return encode_fields("medfed-secagg/1", "advertise", job, round, site, mask_key, share_key)


def survivors_payload(*, job: str, round: int, site: str, survivors: tuple[str, ...]) -> bytes:
    """The bytes a site signs to say which survivor list it was told (consistency check)."""
    return encode_fields("medfed-secagg/1", "survivors", job, round, site, *survivors)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolViolation(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation(f"{where} is not valid base64") from None


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolViolation(f"{where} must be a non-empty string")
    return value


def _dump(kind: str, value: Any) -> Any:
    if kind == "bytes":
        return _b64(value)
    if kind == "names":
        return list(value)
    if kind == "blobs":
        return {k: _b64(v) for k, v in value.items()}
    if kind == "ads":
        return [a.to_json() for a in value]
    return value  # str, int, config dict


def _load(kind: str, value: Any, where: str) -> Any:
    if kind == "str":
        return _name(value, where)
    if kind == "int":
        if type(value) is not int:
            raise ProtocolViolation(f"{where} must be an integer")
        return value
    if kind == "bytes":
        return _unb64(value, where)
    if kind == "names":
        if not isinstance(value, list):
            raise ProtocolViolation(f"{where} must be a list of site names")
        return tuple(_name(v, where) for v in value)
    if kind == "blobs":
        if not isinstance(value, dict):
            raise ProtocolViolation(f"{where} must map site names to base64 strings")
        return {_name(k, where): _unb64(v, f"{where}[{k!r}]") for k, v in value.items()}
    if kind == "ads":
        if not isinstance(value, list):
            raise ProtocolViolation(f"{where} must be a list of key advertisements")
        return tuple(KeyAdvertisement.from_json(v) for v in value)
    if not isinstance(value, dict):  # config
        raise ProtocolViolation(f"{where} must be an object")
    return value


@dataclass(frozen=True, kw_only=True)
class Message:
    """Fields common to every message: the job and round it belongs to."""

    TYPE: ClassVar[str] = ""
    SCHEMA: ClassVar[dict[str, str]] = {}
    job: str
    round: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE, "job": self.job, "round": self.round}
        out.update({k: _dump(kind, getattr(self, k)) for k, kind in self.SCHEMA.items()})
        return out

    @classmethod
    def from_json(cls, data: Any, *, vector: npt.NDArray[Any] | None = None) -> Message:
        if not isinstance(data, dict) or data.get("type") != cls.TYPE:
            raise ProtocolViolation(f"expected a {cls.TYPE!r} message")
        expected = {"type", "job", "round", *cls.SCHEMA}
        if set(data) != expected:
            raise ProtocolViolation(
                f"a {cls.TYPE!r} message has exactly the keys {sorted(expected)}"
            )
        values = {k: _load(kind, data[k], f"{cls.TYPE}.{k}") for k, kind in cls.SCHEMA.items()}
        job, round_ = _load("str", data["job"], "job"), _load("int", data["round"], "round")
        return cls(job=job, round=round_, **values)


@dataclass(frozen=True, kw_only=True)
class AdvertiseRequest(Message):
    TYPE: ClassVar[str] = "advertise_request"
    SCHEMA: ClassVar[dict[str, str]] = {"config": "config", "sites": "names", "graph_seed": "bytes"}
    config: dict[str, Any]
    sites: tuple[str, ...]
    graph_seed: bytes


@dataclass(frozen=True, kw_only=True)
class KeyAdvertisement(Message):
    """A site's two X25519 public keys for this round, signed with its identity key."""

    TYPE: ClassVar[str] = "key_advertisement"
    SCHEMA: ClassVar[dict[str, str]] = {
        "site": "str",
        "mask_key": "bytes",
        "share_key": "bytes",
        "signature": "bytes",
    }
    site: str
    mask_key: bytes
    share_key: bytes
    signature: bytes

    @property
    def payload(self) -> bytes:
        return advertisement_payload(
            job=self.job,
            round=self.round,
            site=self.site,
            mask_key=self.mask_key,
            share_key=self.share_key,
        )


@dataclass(frozen=True, kw_only=True)
class ShareKeysRequest(Message):
    TYPE: ClassVar[str] = "share_keys_request"
    SCHEMA: ClassVar[dict[str, str]] = {"advertisements": "ads"}
    advertisements: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True, kw_only=True)
class ShareKeysReply(Message):
    """Encrypted shares for each neighbour, and a commitment to the self-mask seed."""

    TYPE: ClassVar[str] = "share_keys_reply"
    SCHEMA: ClassVar[dict[str, str]] = {
        "site": "str",
        "commitment": "bytes",
        "ciphertexts": "blobs",
    }
    site: str
    commitment: bytes
    ciphertexts: dict[str, bytes]


@dataclass(frozen=True, kw_only=True)
class MaskedInputRequest(Message):
    """The shares sent to this site, sealed, by sender."""

    TYPE: ClassVar[str] = "masked_input_request"
    SCHEMA: ClassVar[dict[str, str]] = {"ciphertexts": "blobs"}
    ciphertexts: dict[str, bytes]


@dataclass(frozen=True, kw_only=True)
class MaskedInput(Message):
    TYPE: ClassVar[str] = "masked_input"
    SCHEMA: ClassVar[dict[str, str]] = {"site": "str", "length": "int", "dtype": "str"}
    site: str
    vector: npt.NDArray[np.unsignedinteger] = field(compare=False, repr=False)

    @property
    def length(self) -> int:
        return int(self.vector.shape[0]) if self.vector.ndim == 1 else -1

    @property
    def dtype(self) -> str:
        return self.vector.dtype.str

    @classmethod
    def from_json(cls, data: Any, *, vector: npt.NDArray[Any] | None = None) -> MaskedInput:
        if vector is None:
            raise ProtocolViolation("a masked input needs its vector")
        if not isinstance(data, dict) or data.get("type") != cls.TYPE:
            raise ProtocolViolation(f"expected a {cls.TYPE!r} message")
        if set(data) != {"type", "job", "round", *cls.SCHEMA}:
            raise ProtocolViolation("a masked input has keys type, job, round, site, length, dtype")
        vec = np.asarray(vector)
        length, dtype = _load("int", data["length"], "length"), _load("str", data["dtype"], "dtype")
        if vec.ndim != 1 or vec.shape[0] != length or vec.dtype.str != dtype:
            raise ProtocolViolation(f"the vector is not the announced {length} × {dtype}")
        return cls(
            job=_load("str", data["job"], "job"),
            round=_load("int", data["round"], "round"),
            site=_load("str", data["site"], "site"),
            vector=vec,
        )


@dataclass(frozen=True, kw_only=True)
class ConsistencyRequest(Message):
    TYPE: ClassVar[str] = "consistency_request"
    SCHEMA: ClassVar[dict[str, str]] = {"survivors": "names"}
    survivors: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ConsistencySignature(Message):
    TYPE: ClassVar[str] = "consistency_signature"
    SCHEMA: ClassVar[dict[str, str]] = {"site": "str", "signature": "bytes"}
    site: str
    signature: bytes


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest(Message):
    """Who survived (all sites), which of this site's neighbours dropped, and the survivors'
    signatures on the survivor list."""

    TYPE: ClassVar[str] = "unmask_request"
    SCHEMA: ClassVar[dict[str, str]] = {
        "survivors": "names",
        "dropped": "names",
        "signatures": "blobs",
    }
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: dict[str, bytes]


@dataclass(frozen=True, kw_only=True)
class UnmaskReply(Message):
    """Shares of survivors' self-mask seeds and of dropped sites' mask secret keys, by owner."""

    TYPE: ClassVar[str] = "unmask_reply"
    SCHEMA: ClassVar[dict[str, str]] = {
        "site": "str",
        "self_mask_shares": "blobs",
        "key_shares": "blobs",
    }
    site: str
    self_mask_shares: dict[str, bytes]
    key_shares: dict[str, bytes]


_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        AdvertiseRequest,
        KeyAdvertisement,
        ShareKeysRequest,
        ShareKeysReply,
        MaskedInputRequest,
        MaskedInput,
        ConsistencyRequest,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskReply,
    )
}
REQUESTS: dict[Stage, type[Message]] = {
    Stage.ADVERTISE_KEYS: AdvertiseRequest,
    Stage.SHARE_KEYS: ShareKeysRequest,
    Stage.MASKED_INPUT: MaskedInputRequest,
    Stage.CONSISTENCY_CHECK: ConsistencyRequest,
    Stage.UNMASK: UnmaskRequest,
}
REPLIES: dict[Stage, type[Message]] = {
    Stage.ADVERTISE_KEYS: KeyAdvertisement,
    Stage.SHARE_KEYS: ShareKeysReply,
    Stage.MASKED_INPUT: MaskedInput,
    Stage.CONSISTENCY_CHECK: ConsistencySignature,
    Stage.UNMASK: UnmaskReply,
}


def message_from_json(data: Any, *, vector: npt.NDArray[Any] | None = None) -> Message:
    """The message that ``data`` (a dict from ``to_json``) describes; ``vector`` is the binary
    body of a :class:`MaskedInput`."""
    kind = data.get("type") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in _TYPES:
        raise ProtocolViolation(f"unknown secure-aggregation message type {kind!r}")
    return _TYPES[kind].from_json(data, vector=vector)
