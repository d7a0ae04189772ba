"""A coordinator or a site that breaks the protocol is refused; nothing is revealed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medfed.secagg import (
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    MaskedInputRequest,
    ProtocolViolation,
    SecAggAborted,
    SecAggError,
    ShareKeysReply,
    ShareKeysRequest,
    Stage,
    UnmaskReply,
    UnmaskRequest,
)
from medfed.secagg.shamir import Share

from . import Harness

# ------------------------------------------------------------------ the coordinator lies


def _at_unmask(n: int = 6, drop: tuple[str, ...] = ("s05",), **config) -> Harness:
    h = Harness(n, **config)
    h.run_to(Stage.MASKED_INPUT)
    h.step(silent=drop)
    h.step()  # consistency check
    assert h.server.stage == Stage.UNMASK
    return h


def _unmask_request(h: Harness, site: str, **changes) -> UnmaskRequest:
    request = h.server.requests()[site]
    assert isinstance(request, UnmaskRequest)
    return dataclasses.replace(request, **changes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dropped": ("s01", "s05")}, "will not reveal both"),  # a survivor listed as dropped
        ({"dropped": ()}, "do not add up"),  # a dropped neighbour left out
        ({"survivors": ("s00", "s01", "s02", "s03")}, "differs from the one it signed"),
        ({"dropped": ("s05", "s04")}, "sorted"),
    ],
)
def test_contradictory_dropout_lists_are_rejected(changes, match) -> None:
    h = _at_unmask()
    with pytest.raises(ProtocolViolation, match=match):
        h.clients["s00"].handle(_unmask_request(h, "s00", **changes))
    assert h.clients["s00"].stage == Stage.ABORTED  # fails closed: it answers nothing more
    with pytest.raises(ProtocolViolation):
        h.clients["s00"].handle(_unmask_request(h, "s00"))


def test_a_dropped_list_naming_non_neighbours_is_rejected() -> None:
    h = Harness(12, threshold=3, neighbours=4)
    h.run_to(Stage.MASKED_INPUT)
    h.step()
    h.step()
    site = h.sites[0]
    strangers = sorted(set(h.sites) - h.clients[site].group(site))
    with pytest.raises(ProtocolViolation, match="not its neighbours"):
        h.clients[site].handle(_unmask_request(h, site, dropped=(strangers[0],)))


def test_a_dropped_list_naming_a_site_that_never_sent_shares_is_rejected() -> None:
    h = Harness(6)
    h.run_to(Stage.SHARE_KEYS)
    h.step(silent=["s05"])  # s05 advertised keys but never sent shares
    h.step()
    h.step()
    with pytest.raises(ProtocolViolation, match="do not add up"):
        h.clients["s00"].handle(_unmask_request(h, "s00", dropped=("s05",)))


def test_a_site_answers_unmask_once() -> None:
    h = _at_unmask()
    request = _unmask_request(h, "s00")
    reply = h.clients["s00"].handle(request)
    assert isinstance(reply, UnmaskReply) and set(reply.key_shares) == {"s05"}
    assert "s05" not in reply.self_mask_shares
    with pytest.raises(ProtocolViolation, match="done"):
        h.clients["s00"].handle(dataclasses.replace(request, dropped=()))


def test_the_coordinator_cannot_get_both_shares_of_one_site() -> None:
    """Split view: tell {s00, s01, s02, s05} that s05 survived and {s03, s04} that it dropped.
    The first group reveals s05's seed shares; the second refuses to reveal its key shares,
    because fewer than t = 4 sites signed the list in which s05 dropped."""
    h = Harness(6, threshold=4)
    h.run_to(Stage.CONSISTENCY_CHECK)
    everyone = tuple(h.sites)
    without = tuple(s for s in everyone if s != "s05")
    sig = {}
    for s in ("s00", "s01", "s02", "s05"):
        sig[s] = h.clients[s].handle(ConsistencyRequest(job="job-1", round=3, survivors=everyone))
    for s in ("s03", "s04"):
        sig[s] = h.clients[s].handle(ConsistencyRequest(job="job-1", round=3, survivors=without))
    signatures = {s: m.signature for s, m in sig.items() if isinstance(m, ConsistencySignature)}
    seed_shares = 0
    for s in ("s00", "s01", "s02"):
        group_a = {w: signatures[w] for w in ("s00", "s01", "s02", "s05")}
        request = UnmaskRequest(
            job="job-1", round=3, survivors=everyone, dropped=(), signatures=group_a
        )
        reply = h.clients[s].handle(request)
        assert isinstance(reply, UnmaskReply) and not reply.key_shares
        seed_shares += "s05" in reply.self_mask_shares
    assert seed_shares == 3
    # with only the signatures on its own list, too few of s05's group confirmed it …
    own = {w: signatures[w] for w in ("s03", "s04")}
    request = UnmaskRequest(
        job="job-1", round=3, survivors=without, dropped=("s05",), signatures=own
    )
    with pytest.raises(ProtocolViolation, match="only 2 of 's0"):
        h.clients["s03"].handle(request)
    # … and the other group's signatures are on the other list, so they do not verify
    with pytest.raises(ProtocolViolation, match="not valid"):
        h.clients["s04"].handle(dataclasses.replace(request, signatures=signatures))


# ------------------------------------------------------------------ key advertisements


def _tamper_ad(target: str, **changes):
    def tamper(site: str, request):
        assert isinstance(request, ShareKeysRequest)
        ads = tuple(
            dataclasses.replace(a, **changes) if a.site == target else a
            for a in request.advertisements
        )
        return dataclasses.replace(request, advertisements=ads)

    return tamper


@pytest.mark.parametrize(
    "changes",
    [
        {"mask_key": bytes(range(32))},  # a key swapped in by the coordinator
        {"signature": bytes(64)},  # unsigned
        {"round": 2},  # replayed from another round
    ],
)
def test_tampered_or_unsigned_key_advertisements_are_rejected(changes) -> None:
    h = Harness(5, server_verifies=False)
    h.run_to(Stage.SHARE_KEYS)
    with pytest.raises(ProtocolViolation, match="s02"):
        h.step(tamper=_tamper_ad("s02", **changes))


def test_an_altered_own_advertisement_is_rejected() -> None:
    h = Harness(5)
    h.run_to(Stage.SHARE_KEYS)
    with pytest.raises(ProtocolViolation, match="own key advertisement"):
        h.step(tamper=_tamper_ad("s00", share_key=bytes(range(1, 33))))


def test_the_server_refuses_advertisements_signed_by_another_site() -> None:
    h = Harness(4)
    ad = h.clients["s01"].handle(h.server.requests()["s01"])
    assert isinstance(ad, KeyAdvertisement)
    forged = dataclasses.replace(ad, signature=h.identities["s02"].sign(ad.payload))
    with pytest.raises(ProtocolViolation, match="not signed"):
        h.server.receive("s01", forged)
    h.server.receive("s01", ad)  # the genuine one is still accepted
    ad2 = h.clients["s02"].handle(h.server.requests()["s02"])
    assert isinstance(ad2, KeyAdvertisement)
    copy = dataclasses.replace(ad2, mask_key=ad.mask_key)
    with pytest.raises(ProtocolViolation):
        h.server.receive("s02", copy)


def test_an_advertisement_from_a_non_neighbour_is_rejected() -> None:
    h = Harness(12, threshold=3, neighbours=4)
    h.run_to(Stage.SHARE_KEYS)
    site = "s00"
    stranger = sorted(set(h.sites) - h.clients[site].group(site))[0]
    ads = {a.site: a for a in h.server._ads.values()}
    request = h.server.requests()[site]
    assert isinstance(request, ShareKeysRequest)
    bad = dataclasses.replace(request, advertisements=(*request.advertisements, ads[stranger]))
    with pytest.raises(ProtocolViolation, match="not one of its neighbours"):
        h.clients[site].handle(bad)


# ------------------------------------------------------------------ sizes and stages


def test_wrong_sizes_and_shapes_are_refused_by_the_server() -> None:
    h = Harness(4, length=10)
    h.run_to(Stage.MASKED_INPUT)
    good = h.clients["s00"].handle(h.server.requests()["s00"])
    assert isinstance(good, MaskedInput)
    for vector in (good.vector[:-1], good.vector.astype(np.uint64), good.vector.reshape(1, -1)):
        with pytest.raises(ProtocolViolation, match="must be 11 × <u4"):
            h.server.receive("s00", dataclasses.replace(good, vector=vector))
    h.server.receive("s00", good)
    with pytest.raises(ProtocolViolation, match="already replied"):
        h.server.receive("s00", good)


def test_malformed_replies_are_refused_at_each_stage() -> None:
    h = Harness(4)
    ad = h.clients["s00"].handle(h.server.requests()["s00"])
    assert isinstance(ad, KeyAdvertisement)
    with pytest.raises(ProtocolViolation, match="not 32 bytes"):
        h.server.receive("s00", dataclasses.replace(ad, mask_key=ad.mask_key[:31]))
    with pytest.raises(ProtocolViolation, match="not a site of this round"):
        h.server.receive("s99", dataclasses.replace(ad, site="s99"))
    with pytest.raises(ProtocolViolation, match="another job, round or site"):
        h.server.receive("s00", dataclasses.replace(ad, round=4))
    with pytest.raises(ProtocolViolation, match="another job, round or site"):
        h.server.receive("s01", ad)
    with pytest.raises(ProtocolViolation, match="must send a KeyAdvertisement"):
        h.server.receive(
            "s00", ConsistencySignature(job="job-1", round=3, site="s00", signature=b"")
        )
    h.server.receive("s00", ad)
    h.step(silent=["s03"])  # s01 and s02 advertise too; s03 has dropped out
    assert h.server.stage == Stage.SHARE_KEYS
    late = ShareKeysReply(job="job-1", round=3, site="s03", commitment=b"", ciphertexts={})
    with pytest.raises(ProtocolViolation, match="dropped out"):
        h.server.receive("s03", late)
    reply = h.clients["s00"].handle(h.server.requests()["s00"])
    assert isinstance(reply, ShareKeysReply) and set(reply.ciphertexts) == {"s01", "s02"}
    missing = {"s01": reply.ciphertexts["s01"]}
    with pytest.raises(ProtocolViolation, match="must send shares to exactly"):
        h.server.receive("s00", dataclasses.replace(reply, ciphertexts=missing))
    short = {k: v[:-1] for k, v in reply.ciphertexts.items()}
    with pytest.raises(ProtocolViolation, match="ciphertexts"):
        h.server.receive("s00", dataclasses.replace(reply, ciphertexts=short))
    h.server.receive("s00", reply)


def test_bad_unmask_shares_are_refused_and_wrong_ones_abort_the_round() -> None:
    h = _at_unmask()
    replies = h.step(advance=False, silent=["s00"])
    reply = h.clients["s00"].handle(h.server.requests()["s00"])
    assert isinstance(reply, UnmaskReply)
    owner = next(iter(reply.self_mask_shares))
    share = Share.from_bytes(reply.self_mask_shares[owner])
    other_x = dataclasses.replace(share, x=share.x + 1).to_bytes()
    with pytest.raises(ProtocolViolation, match="malformed"):
        h.server.receive(
            "s00",
            dataclasses.replace(reply, self_mask_shares={**reply.self_mask_shares, owner: other_x}),
        )
    with pytest.raises(ProtocolViolation, match="must send seed shares"):
        h.server.receive("s00", dataclasses.replace(reply, key_shares={}))
    # a well-formed but false share (s00 holds x = 1, always among the t used) fails closed
    wrong = dataclasses.replace(share, values=((share.values[0] + 1),)).to_bytes()
    h.server.receive(
        "s00", dataclasses.replace(reply, self_mask_shares={**reply.self_mask_shares, owner: wrong})
    )
    assert set(replies) == {"s01", "s02", "s03", "s04"}
    with pytest.raises(SecAggAborted, match="rebuild a wrong"):
        h.server.advance()


def test_the_site_checks_its_requests() -> None:
    h = Harness(4)
    request = h.server.requests()["s00"]
    assert isinstance(request, AdvertiseRequest)
    cases = [
        (dataclasses.replace(request, job="other"), "job 'other'"),
        (dataclasses.replace(request, config={**request.config, "threshold": 4}), "config"),
        (dataclasses.replace(request, sites=("s01", "s02", "s03", "s04")), "this one included"),
        (dataclasses.replace(request, sites=("s01", "s00", "s02", "s03")), "sorted"),
        (dataclasses.replace(request, graph_seed=b"short"), "graph seed"),
        (ConsistencyRequest(job="job-1", round=3, survivors=()), "got a ConsistencyRequest"),
    ]
    for bad, match in cases:
        client = h.client("s00")
        with pytest.raises(ProtocolViolation, match=match):
            client.handle(bad)


def test_tampered_shares_in_transit_are_rejected() -> None:
    h = Harness(4)
    h.run_to(Stage.MASKED_INPUT)
    request = h.server.requests()["s00"]
    assert isinstance(request, MaskedInputRequest)
    sender, blob = next(iter(request.ciphertexts.items()))
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    bad = dataclasses.replace(request, ciphertexts={**request.ciphertexts, sender: flipped})
    with pytest.raises(ProtocolViolation, match="do not decrypt"):
        h.clients["s00"].handle(bad)
    # swapping whose shares they are is caught too (they are sealed for sender → receiver)
    h2 = Harness(4)
    h2.run_to(Stage.MASKED_INPUT)
    r2 = h2.server.requests()["s00"]
    assert isinstance(r2, MaskedInputRequest)
    a, b = sorted(r2.ciphertexts)[:2]
    swapped = {**r2.ciphertexts, a: r2.ciphertexts[b], b: r2.ciphertexts[a]}
    with pytest.raises(ProtocolViolation, match="do not decrypt"):
        h2.clients["s00"].handle(dataclasses.replace(r2, ciphertexts=swapped))


def test_masked_input_without_an_input_is_a_usage_error_not_a_violation() -> None:
    h = Harness(4)
    h.run_to(Stage.MASKED_INPUT)
    fresh = h.clients["s00"]
    fresh._encoded = None  # as if set_input was never called
    with pytest.raises(SecAggError, match="set_input"):
        fresh.handle(h.server.requests()["s00"])
    assert fresh.stage == Stage.MASKED_INPUT


def test_a_retransmitted_request_gets_the_same_reply() -> None:
    h = _at_unmask()
    request = _unmask_request(h, "s00")
    first = h.clients["s00"].handle(request)
    assert h.clients["s00"].handle(dataclasses.replace(request)) is first
    with pytest.raises(ProtocolViolation):
        h.clients["s00"].handle(dataclasses.replace(request, dropped=()))


def test_the_server_has_nothing_for_a_dropped_site() -> None:
    h = Harness(5)
    h.step(silent=["s04"])
    assert set(h.server.requests()) == {"s00", "s01", "s02", "s03"}
    with pytest.raises(SecAggError, match="nothing to do"):
        h.server.request("s04")
