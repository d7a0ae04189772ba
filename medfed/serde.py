"""Versioned serialization: safetensors for tensors, JSON for metadata, sha256 for integrity.

Nothing here can execute code on load: safetensors holds only raw little-endian buffers and a
JSON header, and metadata is parsed with :func:`json.loads`. Use these functions for anything
that crosses a process or network boundary, or is written to disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load

from medfed.errors import IntegrityError, SerializationError
from medfed.messages import (
    report_from_json,
    report_to_json,
    settings_from_json,
    settings_to_json,
)
from medfed.records import Instruction, Metrics, Operation, Params, Reply, SiteFailure, Update

__all__ = [
    "FORMAT_VERSION",
    "atomic_write",
    "instruction_from_wire",
    "instruction_to_wire",
    "load_params",
    "metrics_from_json",
    "metrics_to_json",
    "params_from_bytes",
    "params_header",
    "params_to_bytes",
    "reply_from_header",
    "reply_from_wire",
    "reply_to_header",
    "reply_to_wire",
    "save_params",
    "sha256_hex",
]

FORMAT_VERSION = "1"
_ORDER_KEY = "medfed.order"
_VERSION_KEY = "medfed.format"


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


_DTYPE_CODES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}


def params_header(params: Params, metadata: Mapping[str, str] | None = None) -> bytes:
    """The first bytes of params' blob: the 8-byte header length and the canonical JSON header.

    The tensors' little-endian bytes follow in order; :func:`params_to_bytes` joins them in
    memory, :func:`medfed.tensor_file.write_params` streams them into a file.
    """
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("safetensors metadata must map str to str")
    meta[_VERSION_KEY] = FORMAT_VERSION
    meta[_ORDER_KEY] = json.dumps(list(params))
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name, tensor in params.items():
        code = _DTYPE_CODES.get(tensor.dtype.name)
        if code is None:
            raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}, which cannot be stored")
        header[name] = {
            "dtype": code,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def params_to_bytes(params: Params, metadata: Mapping[str, str] | None = None) -> bytes:
    """Encode params (and string metadata) as a safetensors blob that remembers their order.

    The bytes are canonical: the same params and metadata always give the same blob (and so
    the same sha256), which content-addressed storage relies on. The blob is read back by the
    safetensors library itself.
    """
    chunks: list[bytes | memoryview] = [params_header(params, metadata)]
    for tensor in params.values():
        arr = np.require(tensor, dtype=tensor.dtype.newbyteorder("<"), requirements=["C"])
        chunks.append(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
    return b"".join(chunks)


def params_from_bytes(
    data: bytes, *, expected_sha256: str | None = None
) -> tuple[Params, dict[str, str]]:
    """Decode a blob from :func:`params_to_bytes`; check its checksum when one is given."""
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise IntegrityError("the tensor data does not match its sha256; fetch it again")
    try:
        arrays = _st_load(data)
        meta = _read_metadata(data)
    except (SafetensorError, ValueError, RecursionError) as exc:
        raise SerializationError(f"not a valid safetensors blob ({_why(exc)})") from None
    version = meta.get(_VERSION_KEY)
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"tensor format version {version!r} is not {FORMAT_VERSION!r}; "
            "upgrade medfed on both sides"
        )
    try:
        order = json.loads(meta.pop(_ORDER_KEY))
    except (KeyError, json.JSONDecodeError, RecursionError) as exc:
        raise SerializationError("tensor blob has no valid medfed order header") from exc
    meta.pop(_VERSION_KEY)
    if not isinstance(order, list) or sorted(order) != sorted(arrays):
        raise IntegrityError("tensor blob's order header does not list exactly its tensors")
    return Params((name, arrays[name]) for name in order), meta


def _why(exc: BaseException) -> str:
    return "JSON nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _read_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("blob is shorter than its header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > 100_000_000:
        raise ValueError("header length is larger than the blob")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("metadata must map strings to strings")
    return dict(meta)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write a file so that a crash leaves either the old content or the new, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_params(
    path: str | os.PathLike[str], params: Params, metadata: Mapping[str, str] | None = None
) -> str:
    """Atomically write params as safetensors; returns the sha256 of the written file."""
    blob = params_to_bytes(params, metadata)
    atomic_write(path, blob)
    return sha256_hex(blob)


def load_params(
    path: str | os.PathLike[str], *, expected_sha256: str | None = None
) -> tuple[Params, dict[str, str]]:
    return params_from_bytes(Path(path).read_bytes(), expected_sha256=expected_sha256)


def metrics_to_json(metrics: Metrics) -> dict[str, Any]:
    return {
        "num_examples": metrics.num_examples,
        "loss": metrics.loss,
        "accuracy": metrics.accuracy,
        "auroc": metrics.auroc,
        "c_index": metrics.c_index,
        "mae": metrics.mae,
        "rmse": metrics.rmse,
        "dice": metrics.dice,
        "extra": dict(metrics.extra),
    }


def json_number(value: Any, what: str) -> float:
    """A JSON number as a float; an integer beyond float's range (10**400) is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SerializationError(f"{what} must be a number")
    try:
        return float(value)
    except OverflowError:
        raise SerializationError(f"{what} is out of range for a number") from None


def metrics_from_json(obj: Mapping[str, Any]) -> Metrics:
    def opt_float(key: str) -> float | None:
        value = obj.get(key)
        return None if value is None else json_number(value, f"metric {key!r}")

    n = obj.get("num_examples", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SerializationError("num_examples must be a non-negative integer")
    extra = obj.get("extra", {})
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in extra.items()
    ):
        raise SerializationError("extra metrics must map names to numbers")
    return Metrics(
        num_examples=n,
        loss=opt_float("loss"),
        accuracy=opt_float("accuracy"),
        auroc=opt_float("auroc"),
        c_index=opt_float("c_index"),
        mae=opt_float("mae"),
        rmse=opt_float("rmse"),
        dice=opt_float("dice"),
        extra={k: json_number(v, f"metric {k!r}") for k, v in extra.items()},
    )


def instruction_to_wire(instruction: Instruction) -> dict[str, Any]:
    """The JSON header of an instruction; its params travel separately as a tensor blob."""
    return {
        "operation": instruction.operation.value,
        "round": instruction.round,
        "seed": instruction.seed,
        "settings": settings_to_json(instruction.settings),
        "message": None if instruction.message is None else dict(instruction.message),
        "run": instruction.run,
    }


def instruction_from_wire(header: Mapping[str, Any], params: Params) -> Instruction:
    try:
        settings = settings_from_json(header.get("settings"))
        return Instruction(
            operation=Operation(header["operation"]),
            round=int(header["round"]),
            seed=int(header["seed"]),
            params=params,
            settings=settings,
            message=_message(header),
            run=_run_name(header),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"malformed instruction header ({exc})") from None


def _run_name(header: Mapping[str, Any]) -> str:
    run = header.get("run", "")
    if not isinstance(run, str) or len(run) > 200 or "\x00" in run:
        raise ValueError("run must be text of at most 200 characters")
    return run


def _message(header: Mapping[str, Any]) -> dict[str, Any] | None:
    """The optional protocol message of a header: a JSON object, or absent."""
    message = header.get("message")
    if message is not None and not isinstance(message, dict):
        raise TypeError("message must be an object")
    return message


def reply_to_wire(reply: Reply) -> tuple[dict[str, Any], bytes | None]:
    """A reply as a JSON header plus, for a training reply, the update's tensor blob."""
    blob = None if reply.update is None else params_to_bytes(reply.update.delta)
    return reply_to_header(reply), blob


def reply_to_header(reply: Reply) -> dict[str, Any]:
    """A reply's JSON header; its update travels separately (e.g. streamed from a file)."""
    return {
        "site": reply.site,
        "round": reply.round,
        "operation": reply.operation.value,
        "seconds": reply.seconds,
        "metrics": None if reply.metrics is None else metrics_to_json(reply.metrics),
        "failure": None
        if reply.failure is None
        else {
            "kind": reply.failure.kind,
            "message": reply.failure.message,
            "detail": reply.failure.detail,
        },
        "num_examples": None if reply.update is None else reply.update.num_examples,
        "message": None if reply.message is None else dict(reply.message),
        "report": None if reply.report is None else report_to_json(reply.report),
    }


def reply_from_wire(header: Mapping[str, Any], blob: bytes | None) -> Reply:
    """A reply from its JSON header and, for a training reply, its update's tensor blob."""
    return reply_from_header(header, None if blob is None else params_from_bytes(blob)[0])


def reply_from_header(header: Mapping[str, Any], delta: Params | None) -> Reply:
    """A reply from its JSON header and an update already decoded (e.g. memory-mapped)."""
    try:
        update = None
        if delta is not None:
            n = header["num_examples"]
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError("num_examples must be an integer")
            update = Update(delta=delta, num_examples=n)
        failure = header.get("failure")
        metrics = header.get("metrics")
        return Reply(
            site=str(header["site"]),
            round=int(header["round"]),
            operation=Operation(header["operation"]),
            update=update,
            metrics=None if metrics is None else metrics_from_json(metrics),
            failure=None
            if failure is None
            else SiteFailure(
                kind=str(failure["kind"]),
                message=str(failure["message"]),
                detail=str(failure.get("detail", "")),
            ),
            seconds=json_number(header.get("seconds", 0.0), "seconds"),
            message=_message(header),
            report=None if header.get("report") is None else report_from_json(header["report"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise SerializationError(f"malformed reply header ({exc})") from None
