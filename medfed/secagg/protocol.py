"""Secure aggregation (SecAgg+, Bell et al. 2020; Bonawitz et al. 2017 on the complete graph).

The coordinator learns the sum of the sites' (weighted, fixed-point encoded) update vectors and
nothing else about any one of them, even if up to n − t sites drop out on the way. One round::

    ADVERTISE_KEYS     each site makes two X25519 key pairs (mask key c, share key s) and a
                       random self-mask seed b; it signs (job, round, site, c_pk, s_pk) with its
                       Ed25519 identity key. The coordinator relays each site's neighbours'
                       advertisements; every site checks every signature.
    SHARE_KEYS         each site Shamir-shares b and c_sk (t of its share group: neighbours +
                       itself) and seals each neighbour's two shares with AES-GCM under a key
                       agreed on the share keys; the coordinator relays the ciphertexts.
    MASKED_INPUT       y_u = encode(w·v, w) + PRG(b_u) + Σ_v ±PRG(s_uv) over the neighbours v that
                       sent shares (s_uv agreed on the mask keys; + if u < v, − otherwise), so
                       pairwise masks cancel in the sum. The coordinator sums the y_u it gets.
    CONSISTENCY_CHECK  the coordinator names the survivors; each signs that list.
    UNMASK             each survivor checks the list is the one it signed, that enough of each
                       share group signed it too, and that the dropped neighbours plus the
                       surviving ones are exactly those it masked with; then it reveals, per
                       neighbour, the b-share (survivor) or the c_sk-share (dropped) — never
                       both. The coordinator rebuilds the seeds and keys from t shares each,
                       removes PRG(b_u) of survivors and the dangling pairwise masks of the
                       dropped, and is left with Σ encode(w·v, w) over the survivors.

Stage names and the message of each are in :mod:`medfed.secagg.messages`; the state machines
are :class:`~medfed.secagg.server.SecAggServer` and :class:`~medfed.secagg.client.SecAggClient`;
:func:`run_in_memory` drives them in one process (tests, benchmark, simulation).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.secagg.client import SecAggClient, ed25519_signer, ed25519_verifier
from medfed.secagg.config import SecAggConfig
from medfed.secagg.messages import MaskedInput, Message, Stage, message_from_json
from medfed.secagg.server import SecAggServer

__all__ = ["InMemoryResult", "run_in_memory"]


@dataclass(frozen=True)
class InMemoryResult:
    """The outcome of :func:`run_in_memory`, with what each side spent."""

    encoded_sum: npt.NDArray[np.uint64]
    weighted_sum: npt.NDArray[np.float64]
    total_weight: float
    survivors: tuple[str, ...]
    site_seconds: Mapping[Stage, Mapping[str, float]]
    """Time each site took to answer each stage (masked input: encoding and masking)."""
    server_seconds: Mapping[Stage, float]
    """Time the coordinator took to close each stage (unmask: rebuilding and unmasking)."""
    receive_seconds: Mapping[Stage, float]
    """Time the coordinator took to check (and, masked inputs, add up) the replies."""
    bytes_sent: Mapping[str, int]
    """JSON metadata bytes each site sent (keys, shares, signatures), vectors excluded."""
    vector_bytes_sent: Mapping[str, int]
    bytes_received: Mapping[str, int]
    """JSON bytes each site received (the requests)."""

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """The weighted mean of the survivors' vectors."""
        return self.weighted_sum / self.total_weight


def _wire(message: Message, serialize: bool) -> tuple[Message, int]:
    """The message as the other side gets it, and its JSON size."""
    data = json.dumps(message.to_json(), separators=(",", ":")).encode()
    if not serialize:
        return message, len(data)
    vector = None
    if isinstance(message, MaskedInput):
        vector = np.frombuffer(message.vector.tobytes(), dtype=message.vector.dtype)
    return message_from_json(json.loads(data), vector=vector), len(data)


def run_in_memory(
    config: SecAggConfig,
    inputs: Mapping[str, tuple[npt.ArrayLike, float]],
    *,
    drop: Mapping[Stage, Collection[str]] | None = None,
    job: str = "in-memory",
    round: int = 0,
    graph_seed: bytes | None = None,
    serialize: bool = True,
) -> InMemoryResult:
    """Run one round among ``inputs`` (site → (float vector, weight)) with real cryptography.

    ``drop[stage]`` names the sites that fall silent at ``stage`` (they never answer it, nor
    anything after). With ``serialize`` every message goes through JSON (vectors as bytes), as
    it would over the network. Raises SecAggAborted when too many sites drop.
    """
    drop = drop or {}
    sites = sorted(inputs)
    identities = {s: ed25519.Ed25519PrivateKey.generate() for s in sites}
    verify = ed25519_verifier({s: k.public_key() for s, k in identities.items()})
    server = SecAggServer(
        config,
        job=job,
        round=round,
        sites=sites,
        graph_seed=graph_seed if graph_seed is not None else os.urandom(32),
        verify_identity=verify,
    )
    clients = {
        s: SecAggClient(
            config,
            job=job,
            round=round,
            site=s,
            identity_sign=ed25519_signer(identities[s]),
            verify_identity=verify,
        )
        for s in sites
    }
    site_seconds: dict[Stage, dict[str, float]] = {}
    server_seconds: dict[Stage, float] = {}
    receive_seconds: dict[Stage, float] = {}
    sent, vectors, received = (
        dict.fromkeys(sites, 0),
        dict.fromkeys(sites, 0),
        dict.fromkeys(sites, 0),
    )
    while server.stage not in (Stage.DONE, Stage.ABORTED):
        stage = server.stage
        silent = set(drop.get(stage, ()))
        site_seconds[stage], receive_seconds[stage] = {}, 0.0
        for site, request in server.requests().items():
            request, size = _wire(request, serialize)
            received[site] += size
            if site in silent:
                continue
            start = time.perf_counter()
            if stage == Stage.MASKED_INPUT:
                clients[site].set_input(*inputs[site])
            reply = clients[site].handle(request)
            site_seconds[stage][site] = time.perf_counter() - start
            reply, size = _wire(reply, serialize)
            sent[site] += size
            if isinstance(reply, MaskedInput):
                vectors[site] += reply.vector.nbytes
            start = time.perf_counter()
            server.receive(site, reply)
            receive_seconds[stage] += time.perf_counter() - start
        start = time.perf_counter()
        server.advance()
        server_seconds[stage] = time.perf_counter() - start
    weighted, total_weight = server.decode()
    return InMemoryResult(
        encoded_sum=server.result(),
        weighted_sum=weighted,
        total_weight=total_weight,
        survivors=server.survivors,
        site_seconds=site_seconds,
        server_seconds=server_seconds,
        receive_seconds=receive_seconds,
        bytes_sent=sent,
        vector_bytes_sent=vectors,
        bytes_received=received,
    )
