"""A step-by-step driver of one secure-aggregation round, for tests that play the coordinator
(honest or not) or tamper with messages between the stages."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.secagg import (
    Message,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    Stage,
    ed25519_signer,
    ed25519_verifier,
)

Tamper = Callable[[str, Message], Message]


class Harness:
    """n sites named s00, s01, … with random inputs, a server and one client each."""

    def __init__(
        self,
        n: int = 6,
        *,
        length: int = 16,
        weights: Collection[float] | None = None,
        server_verifies: bool = True,
        seed: int = 0,
        **config: Any,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.sites = [f"s{i:02d}" for i in range(n)]
        self.config = SecAggConfig(num_sites=n, vector_length=length, **config)
        self.identities = {s: ed25519.Ed25519PrivateKey.generate() for s in self.sites}
        self.verify = ed25519_verifier({s: k.public_key() for s, k in self.identities.items()})
        self.server = SecAggServer(
            self.config,
            job="job-1",
            round=3,
            sites=self.sites,
            graph_seed=os.urandom(32),
            verify_identity=self.verify if server_verifies else None,
        )
        self.clients = {s: self.client(s) for s in self.sites}
        ws = list(weights) if weights is not None else list(rng.integers(1, 500, n))
        self.inputs = {
            s: (rng.uniform(-1, 1, length).astype(np.float32), float(w))
            for s, w in zip(self.sites, ws, strict=True)
        }
        for s, c in self.clients.items():
            c.set_input(*self.inputs[s])

    def client(self, site: str) -> SecAggClient:
        return SecAggClient(
            self.config,
            job="job-1",
            round=3,
            site=site,
            identity_sign=ed25519_signer(self.identities[site]),
            verify_identity=self.verify,
        )

    def step(
        self, *, silent: Collection[str] = (), tamper: Tamper | None = None, advance: bool = True
    ) -> dict[str, Message]:
        """Deliver this stage's requests (optionally altered) and the replies; close the stage."""
        replies = {}
        for site, request in self.server.requests().items():
            if site in silent or site not in self.server.awaiting:
                continue
            if tamper is not None:
                request = tamper(site, request)
            replies[site] = reply = self.clients[site].handle(request)
            self.server.receive(site, reply)
        if advance:
            self.server.advance()
        return replies

    def run_to(self, stage: Stage) -> None:
        """Run honest stages until the server is at ``stage``."""
        while self.server.stage != stage:
            self.step()

    def encoded_sum(self, sites: Collection[str]) -> np.ndarray:
        codec = self.config.codec
        total = np.zeros(self.config.vector_length + 1, codec.dtype)
        for s in sites:
            total += codec.encode(*self.inputs[s])
        return total.astype(np.uint64)
