"""The in-memory transport: an ASGI app called in this process as uvicorn would call it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medfed.federation.transfer.client import ApiError, FederationClient, TransportError
from medfed.federation.transfer.transport import AsgiServer


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes the body's length, sleeps for ``/sleep?s``, fails on ``/fail``."""
    import anyio

    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/fail":
        raise RuntimeError("the app broke")
    if scope["path"] == "/sleep":
        await anyio.sleep(float(scope["query_string"].decode().partition("=")[2]))
    head = {"type": "http.response.start", "status": 200, "headers": [(b"x-path", b"1")]}
    await send(head)
    for piece in (b"%d" % len(body), b":", scope["raw_path"]):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def server() -> Iterator[AsgiServer]:
    s = AsgiServer(app)
    yield s
    s.close()


def client(server: AsgiServer, **kwargs: Any) -> FederationClient:
    return FederationClient(
        "https://coordinator",
        signer=lambda method, path, body: {"x-signed": f"{method} {path}"},
        ca_pem=None,
        transport=server.transport(**kwargs),
    )


def test_a_body_goes_in_pieces_and_the_answer_is_streamed(server: AsgiServer) -> None:
    sent: list[int] = []
    with (
        client(server) as c,
        c.stream("PUT", "/a%2Fb?x=1", body=b"z" * 600_000, on_sent=sent.append) as r,
    ):
        assert list(r.iter_bytes()) == [b"600000", b":", b"/a%2Fb"]
    assert sent[-1] == 600_000 and len(sent) > 1


def test_long_polls_from_several_threads_wait_side_by_side(server: AsgiServer) -> None:
    took: list[float] = []

    def poll() -> None:
        with client(server) as c:
            started = time.monotonic()
            c.request("GET", "/sleep?s=1")
            took.append(time.monotonic() - started)

    started = time.monotonic()
    threads = [threading.Thread(target=poll) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(took) == 6 and time.monotonic() - started < 3, took


def test_an_app_that_fails_answers_500_and_a_slow_one_times_out(server: AsgiServer) -> None:
    with client(server) as c:
        with pytest.raises(ApiError) as refused:
            c.request("POST", "/fail", body=b"{}")
        assert refused.value.status == 500
        with pytest.raises(TransportError, match="ReadTimeout"):
            c.request("GET", "/sleep?s=5", timeout=0.2)
        assert c.request("GET", "/ok").content == b"0:/ok"  # the server goes on


def test_a_closed_server_is_unreachable(server: AsgiServer) -> None:
    server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.Client(transport=server, base_url="https://coordinator").get("/")
