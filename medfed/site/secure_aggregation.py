"""A site's part in secure aggregation: hold the protected update, answer the protocol.

In a secure round the site trains as usual and runs its update pipeline (clip, noise), but
its update does not leave: it is flattened into one vector and held here. The coordinator
then walks the site through the stages of :mod:`medfed.secagg` (one ``SECAGG`` instruction
each); only the masked vector leaves, and the coordinator learns the sum of all sites only.

``TRAIN (hold) ─► advertise keys ─► share keys ─► masked input ─► consistency ─► unmask``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric import ed25519

from medfed.records import Instruction, Params, Update
from medfed.secagg import (
    AdvertiseRequest,
    MaskedInput,
    SecAggClient,
    SecAggConfig,
    ed25519_signer,
    ed25519_verifier,
    message_from_json,
)
from medfed.secagg.errors import ProtocolViolation

__all__ = [
    "MASKED_TENSOR",
    "SecAggIdentity",
    "SecureAggregationSite",
    "flatten",
    "unflatten",
]

MASKED_TENSOR = "secagg.masked"
"""The name of the one tensor of a masked-input reply."""


def flatten(params: Params, extra: npt.ArrayLike = ()) -> npt.NDArray[np.float64]:
    """Every value of ``params`` in order (float64), then ``extra``."""
    tail = np.asarray(extra, np.float64).reshape(-1)
    out = np.empty(params.num_values + tail.size, np.float64)
    at = 0
    for value in params.values():
        out[at : at + value.size] = value.reshape(-1)
        at += value.size
    out[at:] = tail
    return out


def unflatten(vector: npt.NDArray[np.float64], like: Params) -> tuple[Params, np.ndarray]:
    """The inverse of :func:`flatten`: params shaped and typed as ``like``, and the extra tail."""
    out, at = [], 0
    for name, value in like.items():
        part = vector[at : at + value.size].reshape(value.shape).astype(value.dtype)
        out.append((name, part))
        at += value.size
    return Params(out), vector[at:]


@dataclass(frozen=True)
class SecAggIdentity:
    """The key a site signs its key advertisements with, and the public keys of its peers.

    ``peers`` is read each time a peer's signature is checked, not copied: a node may fill
    it lazily (e.g. from the peers' certificates once a round names them) before it hands
    the round's key-advertisement request to :class:`SecureAggregationSite`.
    """

    site: str
    key: ed25519.Ed25519PrivateKey
    peers: Mapping[str, ed25519.Ed25519PublicKey]


class SecureAggregationSite:
    """One site's held update and protocol state, round after round."""

    def __init__(self, identity: SecAggIdentity) -> None:
        self.identity = identity
        self._held: tuple[int, npt.NDArray[np.float64], float] | None = None
        self._client: SecAggClient | None = None
        self._verify = ed25519_verifier(identity.peers)  # read lazily (see SecAggIdentity)
        self.saturated = 0

    def hold(self, instruction: Instruction, update: Update, extra: npt.ArrayLike = ()) -> int:
        """Keep ``update`` (flattened, values saturated at the round's bound) for the protocol.

        Returns what the site may report about it: how many values were saturated.
        """
        secure = instruction.settings.secure
        if secure is None:
            raise ProtocolViolation("this round's settings do not ask for secure aggregation")
        bound, uniform = secure.bound, secure.weights == "uniform"
        vector = flatten(update.delta, extra)
        over = np.abs(vector) > bound
        self.saturated = int(np.count_nonzero(over))
        if self.saturated:
            np.clip(vector, -bound, bound, out=vector)
        weight = 1.0 if uniform else float(update.num_examples)
        self._held = (instruction.round, vector, weight)
        self._client = None
        return self.saturated

    def handle(self, instruction: Instruction) -> tuple[dict[str, object], Update | None]:
        """The reply message (and, at the masked-input stage, the masked vector as an update)."""
        if instruction.message is None:
            raise ProtocolViolation("a secure-aggregation instruction carries a message")
        request = message_from_json(dict(instruction.message))
        if isinstance(request, AdvertiseRequest):
            self._client = self._start(request, instruction.round)
        if self._client is None or self._client.round != instruction.round:
            raise ProtocolViolation(
                f"{self.identity.site} is in no secure-aggregation round {instruction.round}; "
                "secure aggregation starts with a training instruction"
            )
        reply = self._client.handle(request)
        if isinstance(reply, MaskedInput):
            vector = np.ascontiguousarray(reply.vector)
            self._held = None  # the update has left (masked); nothing more to hold
            return reply.to_json(), Update(Params({MASKED_TENSOR: vector}), num_examples=0)
        return reply.to_json(), None

    def _start(self, request: AdvertiseRequest, round: int) -> SecAggClient:
        if self._held is None or self._held[0] != round:
            raise ProtocolViolation(
                f"{self.identity.site} holds no update for round {round}; "
                "secure aggregation starts with a training instruction"
            )
        config = SecAggConfig.from_json(dict(request.config))
        if config.vector_length != self._held[1].size:
            raise ProtocolViolation(
                f"the coordinator asks for a vector of {config.vector_length} values, this "
                f"site's update has {self._held[1].size}"
            )
        if self.identity.site not in request.sites:
            raise ProtocolViolation(f"{self.identity.site} is not among the round's sites")
        client = SecAggClient(
            config,
            job=request.job,
            round=request.round,
            site=self.identity.site,
            identity_sign=ed25519_signer(self.identity.key),
            verify_identity=self._verify,
        )
        client.set_input(self._held[1], self._held[2])
        return client
