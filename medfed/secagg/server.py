"""The coordinator's side of a secure-aggregation round: :class:`SecAggServer`.

The server only relays and checks: it hands out each stage's requests (``requests``), checks
every reply it gets (``receive``) and closes a stage when the caller decides the waiting is
over (``advance``): sites that did not reply are dropped for the rest of the round. Replies
of masked inputs are summed as they arrive, so memory stays one vector. After the unmask stage
it rebuilds each survivor's self-mask seed (checked against its commitment) and each dropped
site's mask key (checked against its advertised public key) from t shares, removes those masks
and keeps the sum of the survivors' encoded vectors (:meth:`result`).

The round aborts — :class:`SecAggAborted`, no result, nothing revealed — as soon as fewer than
t sites remain, or a site whose secret may be needed has fewer than t share holders left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric import x25519

from medfed.secagg import shamir
from medfed.secagg.client import Verifier
from medfed.secagg.config import SecAggConfig
from medfed.secagg.errors import ProtocolViolation, SecAggAborted, SecAggError
from medfed.secagg.graph import neighbour_graph
from medfed.secagg.masking import (
    KEY_BYTES,
    MaskStream,
    agree,
    commitment,
    public_bytes,
    sealed_size,
)
from medfed.secagg.messages import (
    REPLIES,
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
    survivors_payload,
)

__all__ = ["SecAggServer"]

_SHARE = shamir.share_size(KEY_BYTES)
_STAGES = list(Stage)
_MAX_SIGNATURE = 1024


class SecAggServer:
    """The coordinator of one round among ``sites`` (``config.num_sites`` distinct names).

    ``graph_seed`` (≥ 16 bytes, public) fixes the neighbour graph. ``verify_identity``, when
    given, lets the server refuse badly signed advertisements and survivor-list signatures as
    they arrive (the sites check them in any case).
    """

    def __init__(
        self,
        config: SecAggConfig,
        *,
        job: str,
        round: int,
        sites: Sequence[str],
        graph_seed: bytes,
        verify_identity: Verifier | None = None,
    ) -> None:
        names = sorted(sites)
        if len(set(names)) != len(names) or not all(isinstance(s, str) and s for s in names):
            raise SecAggError(
                "the sites of a secure-aggregation round are distinct, non-empty names"
            )
        if len(names) != config.num_sites:
            raise SecAggError(
                f"the config is for {config.num_sites} sites, {len(names)} were given; build the "
                f"config with num_sites={len(names)}"
            )
        if len(graph_seed) < 16:
            raise SecAggError("graph_seed must be at least 16 bytes (use os.urandom(32))")
        self.config, self.job, self.round = config, job, round
        self.sites: tuple[str, ...] = tuple(names)
        self.graph_seed = graph_seed
        self.stage = Stage.ADVERTISE_KEYS
        self._verify = verify_identity
        self._graph = neighbour_graph(names, seed=graph_seed, degree=config.degree)
        self._x = {s: i + 1 for i, s in enumerate(names)}
        self._groups = {s: near | {s} for s, near in self._graph.items()}
        self._keys_seen: set[bytes] = set()
        self._alive: frozenset[str] = frozenset(names)
        self._replies: dict[str, Message | None] = {}  # None: a masked input, already summed
        self._ads: dict[str, KeyAdvertisement] = {}
        self._shares: dict[str, ShareKeysReply] = {}
        self._survivors: tuple[str, ...] = ()
        self._signatures: dict[str, bytes] = {}
        self._unmasked: dict[str, dict[str, dict[str, shamir.Share]]] = {}
        self._sum: npt.NDArray[np.unsignedinteger] | None = None
        self._result: npt.NDArray[np.uint64] | None = None

    # ----------------------------------------------------------------- public state
    def group(self, site: str) -> frozenset[str]:
        """The share group of ``site``: its neighbours and itself."""
        return self._groups[site]

    @property
    def awaiting(self) -> frozenset[str]:
        """Sites asked at this stage that have not replied yet."""
        return self._alive - set(self._replies)

    @property
    def survivors(self) -> tuple[str, ...]:
        """The sites whose inputs are in the sum (known once the masked-input stage closed)."""
        return self._survivors

    def result(self) -> npt.NDArray[np.uint64]:
        """The sum modulo 2^b of the survivors' encoded vectors (``vector_length + 1`` values,
        the last one the total weight); decode it with :meth:`decode`."""
        if self._result is None:
            raise SecAggError(f"the round has no result: it is at stage {self.stage}")
        return self._result

    def decode(self) -> tuple[npt.NDArray[np.float64], float]:
        """The float weighted sum and total weight of the survivors' inputs."""
        return self.config.codec.decode_sum(self.result())

    # ----------------------------------------------------------------- requests
    def requests(self) -> dict[str, Message]:
        """What to send to each site still in the round for the current stage."""
        if self.stage in (Stage.DONE, Stage.ABORTED):
            return {}
        return {site: self.request(site) for site in sorted(self._alive)}

    def request(self, site: str) -> Message:
        """What to send to ``site`` for the current stage (SecAggError if it is not in it)."""
        if self.stage in (Stage.DONE, Stage.ABORTED) or site not in self._alive:
            raise SecAggError(f"{site!r} has nothing to do at stage {self.stage}")
        if self.stage == Stage.ADVERTISE_KEYS:
            return AdvertiseRequest(
                job=self.job,
                round=self.round,
                config=self.config.to_json(),
                sites=self.sites,
                graph_seed=self.graph_seed,
            )
        if self.stage == Stage.SHARE_KEYS:
            ads = tuple(self._ads[v] for v in sorted(self._group_in(site)))
            return ShareKeysRequest(job=self.job, round=self.round, advertisements=ads)
        if self.stage == Stage.MASKED_INPUT:
            senders = sorted(self._graph[site] & self._shares.keys())
            return MaskedInputRequest(
                job=self.job,
                round=self.round,
                ciphertexts={v: self._shares[v].ciphertexts[site] for v in senders},
            )
        if self.stage == Stage.CONSISTENCY_CHECK:
            return ConsistencyRequest(job=self.job, round=self.round, survivors=self._survivors)
        dropped = self._shares.keys() - set(self._survivors)
        if self.config.degree == len(self.sites) - 1:
            hood = frozenset(self.sites)
        else:  # the share groups of the site's share group: whose signatures it checks
            hood = frozenset().union(*map(self.group, self.group(site)))
        return UnmaskRequest(
            job=self.job,
            round=self.round,
            survivors=self._survivors,
            dropped=tuple(sorted(self._graph[site] & dropped)),
            signatures={w: self._signatures[w] for w in sorted(hood & self._signatures.keys())},
        )

    def _group_in(self, site: str) -> set[str]:
        return set(self.group(site)) & set(self._ads)

    # ----------------------------------------------------------------- replies
    def receive(self, site: str, message: Message) -> None:
        """Check and keep one site's reply to the current stage (ProtocolViolation if it is
        not acceptable; the site then counts as not having replied)."""
        if self.stage in (Stage.DONE, Stage.ABORTED):
            raise ProtocolViolation(f"the round is {self.stage}; no more replies are taken")
        if site not in self._x:
            raise ProtocolViolation(f"{site!r} is not a site of this round")
        if site not in self._alive:
            raise ProtocolViolation(f"{site!r} dropped out of this round before {self.stage}")
        if site in self._replies:
            raise ProtocolViolation(f"{site!r} already replied at stage {self.stage}")
        if type(message) is not REPLIES[self.stage]:
            raise ProtocolViolation(
                f"at stage {self.stage} {site!r} must send a {REPLIES[self.stage].__name__}, "
                f"not a {type(message).__name__}"
            )
        if (message.job, message.round, getattr(message, "site", None)) != (
            self.job,
            self.round,
            site,
        ):
            raise ProtocolViolation(f"the reply of {site!r} is for another job, round or site")
        if isinstance(message, KeyAdvertisement):
            self._check_advertisement(message)
        elif isinstance(message, ShareKeysReply):
            self._check_shares(message)
        elif isinstance(message, MaskedInput):
            self._add_input(message)
        elif isinstance(message, ConsistencySignature):
            payload = survivors_payload(
                job=self.job, round=self.round, site=site, survivors=self._survivors
            )
            if len(message.signature) > _MAX_SIGNATURE or (
                self._verify is not None and not self._verify(site, payload, message.signature)
            ):
                raise ProtocolViolation(f"the survivor-list signature of {site!r} is not valid")
        else:
            assert isinstance(message, UnmaskReply)
            self._check_unmask(message)
        self._replies[site] = None if isinstance(message, MaskedInput) else message

    def _check_advertisement(self, ad: KeyAdvertisement) -> None:
        if len(ad.mask_key) != KEY_BYTES or len(ad.share_key) != KEY_BYTES:
            raise ProtocolViolation(f"the public keys of {ad.site!r} are not {KEY_BYTES} bytes")
        if ad.mask_key == ad.share_key or len(ad.signature) > _MAX_SIGNATURE:
            raise ProtocolViolation(f"the key advertisement of {ad.site!r} is malformed")
        if self._verify is not None and not self._verify(ad.site, ad.payload, ad.signature):
            raise ProtocolViolation(f"the key advertisement of {ad.site!r} is not signed by it")
        if {ad.mask_key, ad.share_key} & self._keys_seen:
            raise ProtocolViolation(f"{ad.site!r} advertises a public key another site uses")
        self._keys_seen |= {ad.mask_key, ad.share_key}

    def _check_shares(self, reply: ShareKeysReply) -> None:
        expected = self._group_in(reply.site) - {reply.site}
        if set(reply.ciphertexts) != expected:
            raise ProtocolViolation(
                f"{reply.site!r} must send shares to exactly {sorted(expected)}"
            )
        size = sealed_size(2 * _SHARE)
        if len(reply.commitment) != 32 or any(len(c) != size for c in reply.ciphertexts.values()):
            raise ProtocolViolation(
                f"the shares of {reply.site!r} must be {size}-byte ciphertexts with a 32-byte "
                f"commitment"
            )

    def _add_input(self, message: MaskedInput) -> None:
        vector, codec = message.vector, self.config.codec
        if (
            not isinstance(vector, np.ndarray)
            or vector.shape != (codec.length + 1,)
            or vector.dtype != codec.dtype
        ):
            raise ProtocolViolation(
                f"the masked input of {message.site!r} must be {codec.length + 1} × "
                f"{codec.dtype.str}, got {getattr(vector, 'shape', '?')} × "
                f"{getattr(vector, 'dtype', '?')}"
            )
        if self._sum is None:
            self._sum = vector.astype(codec.dtype, copy=True)
        else:
            np.add(self._sum, vector, out=self._sum)

    def _check_unmask(self, reply: UnmaskReply) -> None:
        u = reply.site
        dropped = set(self._shares) - set(self._survivors)
        want_seeds = set(self._survivors) & self.group(u)
        want_keys = self._graph[u] & dropped
        if set(reply.self_mask_shares) != want_seeds or set(reply.key_shares) != want_keys:
            raise ProtocolViolation(
                f"{u!r} must send seed shares of {sorted(want_seeds)} and key shares of "
                f"{sorted(want_keys)}"
            )
        parsed: dict[str, dict[str, shamir.Share]] = {"seed": {}, "key": {}}
        for kind, shares in (("seed", reply.self_mask_shares), ("key", reply.key_shares)):
            for owner, raw in shares.items():
                try:
                    share = shamir.Share.from_bytes(raw)
                except ValueError:
                    share = None
                if share is None or share.x != self._x[u] or share.length != KEY_BYTES:
                    raise ProtocolViolation(f"the share of {owner!r} sent by {u!r} is malformed")
                parsed[kind][owner] = share
        self._unmasked[u] = parsed

    # ----------------------------------------------------------------- closing a stage
    def advance(self) -> Stage:
        """Close the current stage: sites that did not reply are dropped. Returns the next
        stage, or raises SecAggAborted (the round is then over, without a result)."""
        if self.stage in (Stage.DONE, Stage.ABORTED):
            raise SecAggError(f"the round is already {self.stage}")
        replied = frozenset(self._replies)
        if self.stage == Stage.ADVERTISE_KEYS:
            self._ads = {s: m for s, m in self._replies.items() if isinstance(m, KeyAdvertisement)}
            self._require(replied, replied)
        elif self.stage == Stage.SHARE_KEYS:
            self._shares = {s: m for s, m in self._replies.items() if isinstance(m, ShareKeysReply)}
            self._require(replied, replied)
        elif self.stage == Stage.MASKED_INPUT:
            self._survivors = tuple(sorted(replied))
            self._require(replied, self._shares)
        elif self.stage == Stage.CONSISTENCY_CHECK:
            self._signatures = {
                s: m.signature
                for s, m in self._replies.items()
                if isinstance(m, ConsistencySignature)
            }
            self._require(replied, self._shares)
        else:
            self._unmasked = {s: v for s, v in self._unmasked.items() if s in replied}
            self._require(replied, self._shares)
            self._unmask()
        self._alive, self._replies = replied, {}
        self.stage = _STAGES[_STAGES.index(self.stage) + 1]
        return self.stage

    def _abort(self, reason: str) -> None:
        self.stage = Stage.ABORTED
        self._sum = self._result = None
        self._unmasked, self._replies = {}, {}
        raise SecAggAborted(
            f"secure aggregation of job {self.job!r} round {self.round} aborted: {reason}"
        )

    def _require(self, alive: frozenset[str], owners: Iterable[str]) -> None:
        t = self.config.shares_needed
        if len(alive) < t:
            self._abort(
                f"only {len(alive)} sites remain at {self.stage}, fewer than the threshold {t}"
            )
        for owner in sorted(owners):
            holders = len(self.group(owner) & alive)
            if holders < t:
                self._abort(
                    f"only {holders} of {owner!r}'s share group remain at {self.stage}, fewer than "
                    f"the threshold {t}, so its masks could not be removed"
                )

    def _rebuild(self, kind: str, owner: str) -> bytes:
        shares = sorted(
            (p[kind][owner] for p in self._unmasked.values() if owner in p[kind]),
            key=lambda s: s.x,
        )
        return shamir.combine(shares[: self.config.shares_needed])

    def _unmask(self) -> None:
        assert self._sum is not None
        total = self._sum
        stream = MaskStream(total.shape[0], total.dtype)
        for u in self._survivors:
            seed = self._rebuild("seed", u)
            if (
                commitment(seed, job=self.job, round=self.round, site=u)
                != self._shares[u].commitment
            ):
                self._abort(f"the shares of {u!r}'s mask seed rebuild a wrong seed")
            stream.add(total, seed, sign=-1)
        survivors = set(self._survivors)
        for v in sorted(set(self._shares) - survivors):
            key = x25519.X25519PrivateKey.from_private_bytes(self._rebuild("key", v))
            if public_bytes(key) != self._ads[v].mask_key:
                self._abort(f"the shares of {v!r}'s mask key rebuild a wrong key")
            for u in sorted(self._graph[v] & survivors):
                pair = agree(
                    key,
                    self._ads[u].mask_key,
                    purpose="pairwise-mask",
                    job=self.job,
                    round=self.round,
                    sites=(v, u),
                )
                stream.add(total, pair, sign=-1 if u < v else 1)
        self._result = total.astype(np.uint64)
        self._sum = None
