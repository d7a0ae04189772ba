"""Secure aggregation: the coordinator learns only the sum of the sites' updates.

SecAgg+ (Bell et al. 2020) — Bonawitz et al. (2017) when the neighbour graph is complete —
as pure, I/O-free state machines: :class:`SecAggServer` for the coordinator and
:class:`SecAggClient` for each site, exchanging the plain messages of
:mod:`medfed.secagg.messages`. :func:`run_in_memory` drives a whole round in one process.
See :mod:`medfed.secagg.protocol` for the protocol, :mod:`~medfed.secagg.config` for the
parameters and :mod:`~medfed.secagg.encoding` for the fixed-point budget.
"""

from __future__ import annotations

from medfed.secagg.client import (
    SecAggClient,
    Signer,
    Verifier,
    ed25519_signer,
    ed25519_verifier,
)
from medfed.secagg.config import SecAggConfig, default_degree
from medfed.secagg.encoding import FixedPoint
from medfed.secagg.errors import EncodingError, ProtocolViolation, SecAggAborted, SecAggError
from medfed.secagg.graph import neighbour_graph
from medfed.secagg.messages import (
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    MaskedInputRequest,
    Message,
    ShareKeysReply,
    ShareKeysRequest,
    Stage,
    UnmaskReply,
    UnmaskRequest,
    message_from_json,
)
from medfed.secagg.protocol import InMemoryResult, run_in_memory
from medfed.secagg.server import SecAggServer
from medfed.secagg.shamir import Share, combine, split

__all__ = [
    "AdvertiseRequest",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncodingError",
    "FixedPoint",
    "InMemoryResult",
    "KeyAdvertisement",
    "MaskedInput",
    "MaskedInputRequest",
    "Message",
    "ProtocolViolation",
    "SecAggAborted",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "Share",
    "ShareKeysReply",
    "ShareKeysRequest",
    "Signer",
    "Stage",
    "UnmaskReply",
    "UnmaskRequest",
    "Verifier",
    "combine",
    "default_degree",
    "ed25519_signer",
    "ed25519_verifier",
    "message_from_json",
    "neighbour_graph",
    "run_in_memory",
    "split",
]
