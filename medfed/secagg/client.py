"""The site's side of a secure-aggregation round: one :class:`SecAggClient` per site and round.

The client answers each coordinator request of its stage with one reply (``handle``) and checks
everything it is told before it answers: the coordinator's config and site list, its
neighbours' signed key advertisements, that the shares it receives decrypt, that survivor and
dropout lists agree with what it saw, and that enough of each share group signed the same
survivor list. It reveals, per neighbour, either the self-mask share (the neighbour survived)
or the mask-key share (it dropped) — never both — and only once (a retransmitted request gets
the very same reply). On any violation it raises :class:`ProtocolViolation`, forgets its
secrets and answers nothing more (fails closed).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from medfed.secagg import shamir
from medfed.secagg.config import SecAggConfig
from medfed.secagg.errors import ProtocolViolation, SecAggError
from medfed.secagg.graph import neighbour_graph
from medfed.secagg.masking import (
    KEY_BYTES,
    MaskStream,
    agree,
    commitment,
    open_sealed,
    public_bytes,
    seal,
)
from medfed.secagg.messages import (
    REQUESTS,
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
    advertisement_payload,
    survivors_payload,
)

__all__ = ["SecAggClient", "Signer", "Verifier", "ed25519_signer", "ed25519_verifier"]

Signer = Callable[[bytes], bytes]
Verifier = Callable[[str, bytes, bytes], bool]
_SHARE = shamir.share_size(KEY_BYTES)
_STAGES = list(Stage)


def ed25519_signer(key: ed25519.Ed25519PrivateKey) -> Signer:
    """``identity_sign`` for a site whose identity is an Ed25519 key (as in a medfed kit)."""
    return key.sign


def ed25519_verifier(public_keys: Mapping[str, ed25519.Ed25519PublicKey]) -> Verifier:
    """``verify_identity`` from the sites' Ed25519 public keys (e.g. from their certificates)."""

    def verify(site: str, message: bytes, signature: bytes) -> bool:
        key = public_keys.get(site)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return verify


def _names(values: tuple[str, ...], what: str) -> frozenset[str]:
    if list(values) != sorted(set(values)):
        raise ProtocolViolation(f"the {what} must be sorted and without repeats")
    return frozenset(values)


class SecAggClient:
    """One site in one round. Feed it its input with :meth:`set_input` before the masked-input
    stage; answer every request with :meth:`handle`."""

    def __init__(
        self,
        config: SecAggConfig,
        *,
        job: str,
        round: int,
        site: str,
        identity_sign: Signer,
        verify_identity: Verifier,
    ) -> None:
        self.config, self.job, self.round, self.site = config, job, round, site
        self.stage = Stage.ADVERTISE_KEYS
        self._sign, self._verify = identity_sign, verify_identity
        self._mask_key: x25519.X25519PrivateKey | None = x25519.X25519PrivateKey.generate()
        self._share_key: x25519.X25519PrivateKey | None = x25519.X25519PrivateKey.generate()
        self._seed: bytes | None = secrets.token_bytes(KEY_BYTES)
        self._encoded: npt.NDArray[np.unsignedinteger] | None = None
        self._sites: tuple[str, ...] = ()
        self._graph: dict[str, frozenset[str]] = {}
        self._groups: dict[str, frozenset[str]] = {}
        self._x: dict[str, int] = {}
        self._ads: dict[str, KeyAdvertisement] = {}
        self._held: dict[str, tuple[bytes, bytes]] = {}  # owner → (seed share, key share)
        self._masked_with: frozenset[str] = frozenset()
        self._survivors: tuple[str, ...] | None = None
        self._last: tuple[Message, Message] | None = None

    def group(self, site: str) -> frozenset[str]:
        """The share group of ``site``: its neighbours and itself."""
        return self._groups[site]

    def set_input(self, vector: npt.ArrayLike, weight: float) -> None:
        """Encode this site's vector and weight (raises EncodingError when they do not fit)."""
        self._encoded = self.config.codec.encode(vector, weight)

    def handle(self, request: Message) -> Message:
        """The reply to the coordinator's request of the current stage. The same request
        again (a retransmission) gets the same reply; any other request is refused."""
        if self._last is not None and self.stage != Stage.ABORTED and request == self._last[0]:
            return self._last[1]
        if self.stage in (Stage.DONE, Stage.ABORTED):
            raise ProtocolViolation(f"{self.site}: the round is {self.stage}; nothing more to say")
        if type(request) is not REQUESTS[self.stage]:
            raise ProtocolViolation(
                f"{self.site} is at stage {self.stage} and got a {type(request).__name__}"
            )
        if self.stage == Stage.MASKED_INPUT and self._encoded is None:
            raise SecAggError(f"{self.site}: call set_input before the masked-input stage")
        try:
            if request.job != self.job or request.round != self.round:
                raise ProtocolViolation(
                    f"{self.site} is in job {self.job!r} round {self.round}, the request is for "
                    f"job {request.job!r} round {request.round}"
                )
            reply = self._answer(request)
        except ProtocolViolation:
            self._forget()
            self.stage = Stage.ABORTED
            raise
        self._last = (request, reply)
        self.stage = _STAGES[_STAGES.index(self.stage) + 1]
        if self.stage == Stage.DONE:
            self._forget()
        return reply

    def _answer(self, request: Message) -> Message:
        if isinstance(request, AdvertiseRequest):
            return self._advertise(request)
        if isinstance(request, ShareKeysRequest):
            return self._share_keys(request)
        if isinstance(request, MaskedInputRequest):
            return self._masked_input(request)
        if isinstance(request, ConsistencyRequest):
            return self._consistency(request)
        assert isinstance(request, UnmaskRequest)
        return self._unmask(request)

    def _forget(self) -> None:
        self._mask_key = self._share_key = self._seed = self._encoded = None
        self._held = {}

    def _advertise(self, req: AdvertiseRequest) -> KeyAdvertisement:
        if req.config != self.config.to_json():
            raise ProtocolViolation(
                f"{self.site}: the coordinator's secure-aggregation config {req.config} is not "
                f"this site's {self.config.to_json()}"
            )
        sites = _names(req.sites, "site list")
        if len(sites) != self.config.num_sites or self.site not in sites:
            raise ProtocolViolation(
                f"{self.site}: the site list must hold {self.config.num_sites} sites, this one "
                f"included"
            )
        if len(req.graph_seed) < 16:
            raise ProtocolViolation(f"{self.site}: the graph seed is shorter than 16 bytes")
        self._sites = req.sites
        self._graph = neighbour_graph(req.sites, seed=req.graph_seed, degree=self.config.degree)
        self._groups = {s: near | {s} for s, near in self._graph.items()}
        self._x = {s: i + 1 for i, s in enumerate(req.sites)}
        assert self._mask_key is not None and self._share_key is not None
        mask_key, share_key = public_bytes(self._mask_key), public_bytes(self._share_key)
        payload = advertisement_payload(
            job=self.job, round=self.round, site=self.site, mask_key=mask_key, share_key=share_key
        )
        ad = KeyAdvertisement(
            job=self.job,
            round=self.round,
            site=self.site,
            mask_key=mask_key,
            share_key=share_key,
            signature=self._sign(payload),
        )
        self._ads = {self.site: ad}
        return ad

    def _share_keys(self, req: ShareKeysRequest) -> ShareKeysReply:
        own, group = self._ads[self.site], self.group(self.site)
        ads = {a.site: a for a in req.advertisements}
        if len(ads) != len(req.advertisements):
            raise ProtocolViolation(f"{self.site}: a site advertises its keys twice")
        if ads.get(self.site) != own:
            raise ProtocolViolation(f"{self.site}: its own key advertisement is missing or altered")
        keys: set[bytes] = set()
        for name, ad in ads.items():
            if name not in group:
                raise ProtocolViolation(f"{self.site}: {name!r} is not one of its neighbours")
            if (ad.job, ad.round) != (self.job, self.round):
                raise ProtocolViolation(f"{self.site}: the advertisement of {name!r} is stale")
            if len(ad.mask_key) != KEY_BYTES or len(ad.share_key) != KEY_BYTES:
                raise ProtocolViolation(
                    f"{self.site}: the public keys of {name!r} are not 32 bytes"
                )
            if not self._verify(name, ad.payload, ad.signature):
                raise ProtocolViolation(
                    f"{self.site}: the key advertisement of {name!r} is not signed by {name!r}"
                )
            keys |= {ad.mask_key, ad.share_key}
        if len(keys) != 2 * len(ads):
            raise ProtocolViolation(f"{self.site}: two advertised public keys are the same")
        t = self.config.shares_needed
        if len(ads) < t:
            raise ProtocolViolation(
                f"{self.site}: only {len(ads)} of its share group advertised keys, fewer than "
                f"the threshold {t}"
            )
        self._ads = ads
        holders = sorted(ads)
        xs = [self._x[h] for h in holders]
        assert self._seed is not None and self._mask_key is not None
        sk = self._mask_key.private_bytes_raw()
        seed_shares = shamir.split(self._seed, threshold=t, xs=xs)
        key_shares = shamir.split(sk, threshold=t, xs=xs)
        ciphertexts = {}
        for holder, b, s in zip(holders, seed_shares, key_shares, strict=True):
            if holder == self.site:
                self._held[holder] = (b.to_bytes(), s.to_bytes())
                continue
            key = self._pair_key("share-encryption", holder, ads[holder].share_key)
            ciphertexts[holder] = seal(
                key,
                b.to_bytes() + s.to_bytes(),
                job=self.job,
                round=self.round,
                sender=self.site,
                receiver=holder,
            )
        seal_of_seed = commitment(self._seed, job=self.job, round=self.round, site=self.site)
        return ShareKeysReply(
            job=self.job,
            round=self.round,
            site=self.site,
            commitment=seal_of_seed,
            ciphertexts=ciphertexts,
        )

    def _pair_key(self, purpose: str, peer: str, peer_public: bytes) -> bytes:
        private = self._share_key if purpose == "share-encryption" else self._mask_key
        assert private is not None
        return agree(
            private,
            peer_public,
            purpose=purpose,
            job=self.job,
            round=self.round,
            sites=(self.site, peer),
        )

    def _masked_input(self, req: MaskedInputRequest) -> MaskedInput:
        my_x = self._x[self.site]
        for sender, blob in req.ciphertexts.items():
            if sender == self.site or sender not in self._ads:
                raise ProtocolViolation(f"{self.site}: shares from {sender!r} were not expected")
            key = self._pair_key("share-encryption", sender, self._ads[sender].share_key)
            plain = open_sealed(
                key, blob, job=self.job, round=self.round, sender=sender, receiver=self.site
            )
            try:
                if len(plain) != 2 * _SHARE:
                    raise ValueError
                b, s = plain[:_SHARE], plain[_SHARE:]
                parsed = shamir.Share.from_bytes(b), shamir.Share.from_bytes(s)
            except ValueError:
                raise ProtocolViolation(
                    f"{self.site}: the shares from {sender!r} are malformed"
                ) from None
            if any(p.x != my_x or p.length != KEY_BYTES for p in parsed):
                raise ProtocolViolation(f"{self.site}: the shares from {sender!r} are not for it")
            self._held[sender] = (b, s)
        t = self.config.shares_needed
        if len(req.ciphertexts) + 1 < t:
            raise ProtocolViolation(
                f"{self.site}: only {len(req.ciphertexts) + 1} of its share group sent shares, "
                f"fewer than the threshold {t}"
            )
        self._masked_with = frozenset(req.ciphertexts)
        assert self._encoded is not None and self._seed is not None
        masked = self._encoded.copy()
        stream = MaskStream(masked.shape[0], masked.dtype)
        stream.add(masked, self._seed)
        for peer in sorted(self._masked_with):
            key = self._pair_key("pairwise-mask", peer, self._ads[peer].mask_key)
            stream.add(masked, key, sign=1 if self.site < peer else -1)
        self._encoded = None
        return MaskedInput(job=self.job, round=self.round, site=self.site, vector=masked)

    def _consistency(self, req: ConsistencyRequest) -> ConsistencySignature:
        survivors = _names(req.survivors, "survivor list")
        if not survivors <= set(self._sites) or self.site not in survivors:
            raise ProtocolViolation(
                f"{self.site}: the survivor list must name known sites, this one included"
            )
        mine = survivors & self._graph[self.site]
        if not mine <= self._masked_with:
            odd = sorted(mine - self._masked_with)
            raise ProtocolViolation(f"{self.site}: {odd} survived but never sent it their shares")
        if len(mine) + 1 < self.config.shares_needed:
            raise ProtocolViolation(
                f"{self.site}: fewer survivors in its share group than the threshold"
            )
        self._survivors = req.survivors
        payload = survivors_payload(
            job=self.job, round=self.round, site=self.site, survivors=req.survivors
        )
        return ConsistencySignature(
            job=self.job, round=self.round, site=self.site, signature=self._sign(payload)
        )

    def _unmask(self, req: UnmaskRequest) -> UnmaskReply:
        if req.survivors != self._survivors:
            raise ProtocolViolation(
                f"{self.site}: the survivor list differs from the one it signed"
            )
        survivors = frozenset(req.survivors)
        dropped = _names(req.dropped, "dropped list")
        neighbours = self._graph[self.site]
        if not dropped <= neighbours:
            raise ProtocolViolation(
                f"{self.site}: the dropped list names {sorted(dropped - neighbours)}, which are "
                f"not its neighbours"
            )
        if dropped & survivors:
            raise ProtocolViolation(
                f"{self.site}: {sorted(dropped & survivors)} are listed as dropped and survived; "
                f"it will not reveal both shares of a site"
            )
        if (survivors & neighbours) | dropped != self._masked_with:
            raise ProtocolViolation(
                f"{self.site}: survivors and dropped neighbours do not add up to the "
                f"{len(self._masked_with)} neighbours it masked with"
            )
        signers = set()
        for signer, signature in req.signatures.items():
            payload = survivors_payload(
                job=self.job, round=self.round, site=signer, survivors=req.survivors
            )
            if signer not in survivors or not self._verify(signer, payload, signature):
                raise ProtocolViolation(
                    f"{self.site}: the survivor-list signature of {signer!r} is not valid"
                )
            signers.add(signer)
        owners = (survivors & self.group(self.site)) | dropped
        t = self.config.shares_needed
        for owner in sorted(owners):
            confirmed = len(signers & self.group(owner))
            if confirmed < t:
                raise ProtocolViolation(
                    f"{self.site}: only {confirmed} of {owner!r}'s share group signed the "
                    f"survivor list, fewer than the threshold {t}"
                )
        seed_shares = {w: self._held[w][0] for w in sorted(survivors & self.group(self.site))}
        key_shares = {w: self._held[w][1] for w in sorted(dropped)}
        return UnmaskReply(
            job=self.job,
            round=self.round,
            site=self.site,
            self_mask_shares=seed_shares,
            key_shares=key_shares,
        )
