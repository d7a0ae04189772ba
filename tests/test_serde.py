from __future__ import annotations

import json

import numpy as np
import pytest

from medfed.errors import IntegrityError, SerializationError
from medfed.messages import RoundSettings, SecureSettings, SiteReport
from medfed.records import Instruction, Metrics, Operation, Params, Reply, SiteFailure, Update
from medfed.serde import (
    instruction_from_wire,
    instruction_to_wire,
    load_params,
    params_from_bytes,
    params_to_bytes,
    reply_from_wire,
    reply_to_wire,
    save_params,
    sha256_hex,
)


def _params() -> Params:
    return Params(
        [
            ("layer.weight", np.arange(6, dtype=np.float32).reshape(2, 3)),
            ("a.bias", np.array([1.5, -2.0], np.float64)),
            ("bn.num_batches_tracked", np.array(7, np.int64)),
        ]
    )


def test_round_trip_keeps_order_dtype_and_values(tmp_path) -> None:
    p = _params()
    blob = params_to_bytes(p, {"round": "3"})
    q, meta = params_from_bytes(blob, expected_sha256=sha256_hex(blob))
    assert q == p and list(q) == list(p)
    assert meta == {"round": "3"}
    digest = save_params(tmp_path / "m.safetensors", p)
    assert load_params(tmp_path / "m.safetensors", expected_sha256=digest)[0] == p


def test_checksum_mismatch_is_refused() -> None:
    blob = params_to_bytes(_params())
    with pytest.raises(IntegrityError, match="sha256"):
        params_from_bytes(blob, expected_sha256="0" * 64)


@pytest.mark.parametrize("blob", [b"", b"\x00" * 4, b"\xff" * 16, b"not safetensors at all"])
def test_garbage_is_a_serialization_error(blob: bytes) -> None:
    with pytest.raises(SerializationError):
        params_from_bytes(blob)


def test_wrong_format_version_is_refused() -> None:
    from safetensors.numpy import save

    blob = save({"w": np.zeros(2, np.float32)}, metadata={"medfed.format": "999"})
    with pytest.raises(IntegrityError, match="version"):
        params_from_bytes(blob)


def test_order_header_must_list_the_tensors() -> None:
    from safetensors.numpy import save

    blob = save(
        {"w": np.zeros(2, np.float32)},
        metadata={"medfed.format": "1", "medfed.order": json.dumps(["w", "extra"])},
    )
    with pytest.raises(IntegrityError, match="order"):
        params_from_bytes(blob)


def test_instruction_and_reply_round_trip() -> None:
    p = _params()
    settings = RoundSettings(
        proximal_mu=0.1, clip_norm=2.0, secure=SecureSettings("uniform", 3.0), task={"tag": "x"}
    )
    ins = Instruction(Operation.TRAIN, 4, p, seed=99, settings=settings)
    header = json.loads(json.dumps(instruction_to_wire(ins)))
    assert instruction_from_wire(header, p) == ins

    reply = Reply(
        site="h1",
        round=4,
        operation=Operation.TRAIN,
        update=Update(p, num_examples=12),
        metrics=Metrics(num_examples=12, loss=0.5, extra={"f1": 0.7}),
        seconds=1.25,
        report=SiteReport(clip_bit=-0.4, epsilon=1.5, saturated=3, local_steps=40),
    )
    h, blob = reply_to_wire(reply)
    back = reply_from_wire(json.loads(json.dumps(h)), blob)
    assert back.report == reply.report
    assert back.update is not None and back.update.delta == p
    assert back.metrics == reply.metrics and back.site == "h1" and back.seconds == 1.25

    failed = Reply("h2", 4, Operation.TRAIN, failure=SiteFailure("OSError", "disk full"))
    h, blob = reply_to_wire(failed)
    assert blob is None
    assert reply_from_wire(h, None).failure == failed.failure


def test_protocol_messages_round_trip_and_must_be_objects() -> None:
    p = _params()
    message = {"stage": "share_keys", "keys": {"h2": "AAEC"}, "n": 3}
    ins = Instruction(Operation.SECAGG, 2, p, seed=1, message=message)
    header = json.loads(json.dumps(instruction_to_wire(ins)))
    assert instruction_from_wire(header, p).message == message
    reply = Reply("h1", 2, Operation.SECAGG, message={"shares": ["x", "y"]})
    h, blob = reply_to_wire(reply)
    assert reply_from_wire(json.loads(json.dumps(h)), blob).message == {"shares": ["x", "y"]}
    h["message"] = ["not", "an", "object"]
    with pytest.raises(SerializationError):
        reply_from_wire(h, blob)
    header["message"] = "text"
    with pytest.raises(SerializationError):
        instruction_from_wire(header, p)


def test_malformed_reply_header_is_refused() -> None:
    with pytest.raises(SerializationError):
        reply_from_wire({"site": "x"}, None)
    h, blob = reply_to_wire(Reply("h", 1, Operation.TRAIN, update=Update(_params(), 3)))
    h["num_examples"] = "3"
    with pytest.raises(SerializationError):
        reply_from_wire(h, blob)


def test_encoding_is_canonical() -> None:
    p = _params()
    a = params_to_bytes(p, {"round": "1", "job": "j"})
    b = params_to_bytes(p.copy(), {"job": "j", "round": "1"})
    assert a == b


def test_big_endian_and_empty_tensors_round_trip() -> None:
    p = Params(
        [
            ("be", np.arange(4, dtype=">f4")),
            ("empty", np.zeros((0, 3), np.float32)),
            ("mask", np.array([True, False])),
        ]
    )
    q, _ = params_from_bytes(params_to_bytes(p))
    np.testing.assert_array_equal(q["be"], np.arange(4, dtype=np.float32))
    assert q["empty"].shape == (0, 3) and q["mask"].dtype == np.bool_


def test_unsupported_dtype_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="complex"):
        params_to_bytes(Params({"c": np.zeros(2, np.complex64)}))
