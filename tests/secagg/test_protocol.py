from __future__ import annotations

import json

import numpy as np
import pytest

from medfed.errors import RoundFailed
from medfed.secagg import (
    MaskedInput,
    ProtocolViolation,
    SecAggAborted,
    SecAggConfig,
    SecAggError,
    Stage,
    message_from_json,
    run_in_memory,
)

from . import Harness


def _inputs(n: int, length: int, *, seed: int = 0, weight_high: int = 1000):
    rng = np.random.default_rng(seed)
    return {
        f"site-{i:02d}": (
            rng.uniform(-1, 1, length).astype(np.float32),
            float(rng.integers(1, weight_high)),
        )
        for i in range(n)
    }


def _expected(config: SecAggConfig, inputs, sites) -> np.ndarray:
    codec = config.codec
    total = np.zeros(config.vector_length + 1, codec.dtype)
    for s in sites:
        total += codec.encode(*inputs[s])
    return total.astype(np.uint64)


def _check(result, config, inputs) -> None:
    assert np.array_equal(result.encoded_sum, _expected(config, inputs, result.survivors))
    exact = sum(inputs[s][1] * inputs[s][0].astype(np.float64) for s in result.survivors)
    bound = config.codec.error_bound(len(result.survivors))
    assert np.abs(result.weighted_sum - exact).max() <= bound
    assert result.total_weight == sum(inputs[s][1] for s in result.survivors)
    np.testing.assert_allclose(
        result.mean, exact / result.total_weight, atol=bound / result.total_weight
    )


@pytest.mark.parametrize("bits", [32, 64])
def test_unmasked_sum_equals_the_sum_of_encoded_inputs_bit_for_bit(bits: int) -> None:
    inputs = _inputs(5, 1000)
    config = SecAggConfig(num_sites=5, vector_length=1000, modulus_bits=bits)
    result = run_in_memory(config, inputs)
    assert result.survivors == tuple(sorted(inputs))
    _check(result, config, inputs)


def test_thirty_percent_dropout_at_masked_input_and_more_during_unmask_is_recovered() -> None:
    inputs = _inputs(10, 2000, seed=1)
    config = SecAggConfig(num_sites=10, vector_length=2000)  # t = 6
    names = sorted(inputs)
    drop = {Stage.MASKED_INPUT: set(names[2:5]), Stage.UNMASK: {names[0]}}
    result = run_in_memory(config, inputs, drop=drop)
    assert set(result.survivors) == set(names) - set(names[2:5])
    _check(result, config, inputs)  # the site silent at unmask is still in the sum


def test_dropouts_at_every_stage_are_recovered() -> None:
    inputs = _inputs(14, 300, seed=2)
    config = SecAggConfig(num_sites=14, vector_length=300)  # t = 8
    n = sorted(inputs)
    drop = {
        Stage.ADVERTISE_KEYS: {n[0]},
        Stage.SHARE_KEYS: {n[1]},
        Stage.MASKED_INPUT: {n[2], n[3]},
        Stage.CONSISTENCY_CHECK: {n[4]},
        Stage.UNMASK: {n[5]},
    }
    result = run_in_memory(config, inputs, drop=drop)
    assert set(result.survivors) == set(n) - {n[0], n[1], n[2], n[3]}
    _check(result, config, inputs)


def test_secagg_plus_sparse_graph_with_dropouts() -> None:
    inputs = _inputs(16, 500, seed=3)
    config = SecAggConfig(num_sites=16, vector_length=500, neighbours=6, threshold=4)
    assert config.degree == 6
    result = run_in_memory(
        config, inputs, drop={Stage.MASKED_INPUT: {"site-03", "site-11"}}, graph_seed=b"g" * 32
    )
    _check(result, config, inputs)


def test_large_example_counts_over_twelve_sites_do_not_overflow() -> None:
    n, length = 12, 200
    config = SecAggConfig(num_sites=n, vector_length=length, max_weight=200_000)
    inputs = {f"h{i:02d}": (np.full(length, 1.0, np.float32), 200_000.0) for i in range(n)}
    result = run_in_memory(config, inputs)
    _check(result, config, inputs)
    np.testing.assert_allclose(result.mean, 1.0, atol=1e-6)


def test_too_many_dropouts_abort_the_round_and_reveal_nothing() -> None:
    inputs = _inputs(10, 50)
    config = SecAggConfig(num_sites=10, vector_length=50)  # t = 6
    names = sorted(inputs)
    with pytest.raises(SecAggAborted, match="fewer than the threshold 6") as info:
        run_in_memory(config, inputs, drop={Stage.MASKED_INPUT: set(names[:5])})
    assert isinstance(info.value, RoundFailed) and info.value.exit_code == 4
    h = Harness(10, threshold=6)
    h.run_to(Stage.UNMASK)
    replies = h.step(silent=h.sites[:5], advance=False)
    with pytest.raises(SecAggAborted, match="only 5 sites remain at unmask"):
        h.server.advance()
    assert h.server.stage == Stage.ABORTED
    with pytest.raises(SecAggError, match="no result"):
        h.server.result()
    with pytest.raises(ProtocolViolation, match="aborted"):
        h.server.receive("s05", replies["s05"])
    assert h.server.requests() == {}


def test_every_message_survives_json() -> None:
    h = Harness(4)
    while h.server.stage != Stage.DONE:
        for site, request in h.server.requests().items():
            data = json.loads(json.dumps(request.to_json()))
            assert message_from_json(data) == request
            reply = h.clients[site].handle(request)
            vector = reply.vector if isinstance(reply, MaskedInput) else None
            back = message_from_json(json.loads(json.dumps(reply.to_json())), vector=vector)
            assert back == reply
            h.server.receive(site, back)
        h.server.advance()
    assert np.array_equal(h.server.result(), h.encoded_sum(h.sites))


@pytest.mark.parametrize(
    "data",
    [
        {"type": "nope"},
        [],
        {"type": "consistency_request", "job": "j", "round": 1},
        {"type": "consistency_request", "job": "j", "round": "1", "survivors": []},
        {"type": "consistency_request", "job": "j", "round": 1, "survivors": [""]},
        {"type": "consistency_request", "job": "j", "round": 1, "survivors": [], "x": 1},
        {"type": "consistency_signature", "job": "j", "round": 1, "site": "a", "signature": "*"},
        {"type": "masked_input", "job": "j", "round": 1, "site": "a", "length": 3, "dtype": "<u4"},
    ],
)
def test_malformed_json_messages_are_protocol_violations(data) -> None:
    with pytest.raises(ProtocolViolation):
        message_from_json(data)


def test_a_vector_that_does_not_match_its_announcement_is_refused() -> None:
    data = {"type": "masked_input", "job": "j", "round": 1, "site": "a", "length": 3}
    with pytest.raises(ProtocolViolation, match="announced"):
        message_from_json({**data, "dtype": "<u4"}, vector=np.zeros(4, np.uint32))
    with pytest.raises(ProtocolViolation, match="announced"):
        message_from_json({**data, "dtype": "<u4"}, vector=np.zeros(3, np.uint64))


def test_run_in_memory_reports_time_and_bytes() -> None:
    inputs = _inputs(4, 1000)
    result = run_in_memory(SecAggConfig(num_sites=4, vector_length=1000), inputs)
    assert set(result.site_seconds[Stage.MASKED_INPUT]) == set(inputs)
    assert result.server_seconds[Stage.UNMASK] > 0
    assert all(v == 1001 * 4 for v in result.vector_bytes_sent.values())
    assert all(0 < v < 10_000 for v in result.bytes_sent.values())
