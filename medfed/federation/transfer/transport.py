"""How a signed request reaches the coordinator: over HTTPS, or in memory into its ASGI app.

:class:`~medfed.federation.transfer.client.FederationClient` signs a request and hands it to a
:class:`Transport`: method, path (with its query), headers and body (bytes, or an iterator of
pieces) in; an :class:`httpx.Response` out, whose body is read as it arrives when asked to
``stream``. Failures are :class:`httpx.HTTPError` (the client turns them into
``TransportError``).

* :class:`HttpsTransport` is httpx over TLS: the server's certificate must chain to the
  federation CA and match the pinned fingerprint of the startup kit.
* :class:`AsgiTransport` calls an ASGI app (the coordinator's own FastAPI app) in this process
  through an :class:`AsgiServer`: the same server code, signatures and checks, without a socket.
  It serves tests and simulations of a whole federation in one process; there is no certificate
  to pin. The server runs one event loop in a thread; any number of threads may send requests
  at once (long-polls included), each one waiting only for its own answer.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import ExitStack, suppress
from typing import Any, Protocol
from urllib.parse import unquote

import httpx

from medfed.errors import MedfedError

__all__ = [
    "AsgiServer",
    "AsgiTransport",
    "HttpsTransport",
    "PinMismatch",
    "Transport",
    "TransportError",
]

log = logging.getLogger("medfed.transfer")

Body = bytes | Iterator[bytes] | None
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class TransportError(MedfedError):
    """The coordinator could not be reached (network, TLS, timeout); worth retrying."""


class PinMismatch(TransportError):
    """The server's certificate is not the pinned one: never retried within a transfer."""


class Transport(Protocol):
    """Carries one signed request to the coordinator and brings back its response."""

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Body = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send ``method path`` (``path`` holds the query) with exactly these headers.

        ``timeout`` (None: the transport's default) bounds every wait for the server, not the
        request. With ``stream`` the body is read as it arrives (``iter_bytes``) and the caller
        closes the response; otherwise it is read whole. Raises :class:`httpx.HTTPError` when
        the server cannot be reached or the connection breaks, :class:`PinMismatch` when the
        server is not the pinned one.
        """
        ...

    def close(self) -> None: ...


class HttpsTransport:
    """httpx over TLS, trusting only the federation CA and (with ``server_pin``) one certificate."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_pem: bytes | None,
        server_pin: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self._pin = server_pin
        verify: ssl.SSLContext | bool
        if insecure:
            verify = False
        else:
            if ca_pem is None:
                raise ValueError("a CA certificate is needed unless insecure")
            verify = ssl.create_default_context(cadata=ca_pem.decode())
        self._http = httpx.Client(
            base_url=base_url,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=False,
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Body = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        if timeout is None:
            limits: Any = httpx.USE_CLIENT_DEFAULT
        elif stream:  # a transfer's request: connecting never takes longer than 10 s
            limits = httpx.Timeout(timeout, connect=min(10.0, timeout))
        else:
            limits = timeout
        request = self._http.build_request(
            method, path, content=body, headers=headers, timeout=limits
        )
        response = self._http.send(request, stream=stream)
        try:
            self._check_pin(response)
        except PinMismatch:
            response.close()
            raise
        return response

    def _check_pin(self, response: httpx.Response) -> None:
        if self._pin is None:
            return
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        if der is None or hashlib.sha256(der).hexdigest() != self._pin:
            raise PinMismatch(
                "the coordinator's certificate does not match the pin in your startup kit; "
                "do not proceed and ask your federation admin"
            )

    def close(self) -> None:
        self._http.close()


class AsgiTransport:
    """Requests into ``server``'s ASGI app, in this process: no socket, no TLS, same checks.

    Headers and the URL are built by httpx exactly as for HTTPS (``base_url`` only names the
    host); the request goes to the app as uvicorn would hand it over.
    """

    def __init__(
        self, server: AsgiServer, base_url: str = "https://coordinator", *, timeout: float = 60.0
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            transport=server.connection(),
            timeout=timeout,
            follow_redirects=False,
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Body = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        limits: Any = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        request = self._http.build_request(
            method, path, content=body, headers=headers, timeout=limits
        )
        return self._http.send(request, stream=stream)

    def close(self) -> None:
        self._http.close()


class AsgiServer(httpx.BaseTransport):
    """Serves an ASGI app to httpx clients in this process, on an event loop of its own.

    Like uvicorn it gives the app one task per request, feeds it the request body as it is
    sent, answers 500 when the app fails before responding, and tells the app when the client
    went away (a response closed early, a body that broke off). Use it through
    :class:`AsgiTransport` or as ``httpx.Client(transport=server.connection())`` (closing such
    a client leaves the server serving); ``close()`` cancels whatever is still running and
    stops the loop.
    """

    _BUFFER = 4  # pieces of a body in flight between the caller's thread and the loop

    def __init__(self, app: AsgiApp, *, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        from anyio.from_thread import start_blocking_portal

        self._app = app
        self._client = client
        self._exit = ExitStack()
        self._portal = self._exit.enter_context(start_blocking_portal(name="asgi-server"))
        self._closed = threading.Event()

    def transport(self, base_url: str = "https://coordinator", **kwargs: Any) -> AsgiTransport:
        return AsgiTransport(self, base_url, **kwargs)

    def connection(self) -> httpx.BaseTransport:
        """An httpx transport into this server that a client may close (it stays up)."""
        return _Connection(self)

    def close(self) -> None:
        """Stop serving: cancel the requests still running and end the loop. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with suppress(RuntimeError):  # stopped already
            self._portal.call(self._portal.stop, True)
        self._exit.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        if self._closed.is_set():
            raise httpx.ConnectError("the in-memory server is closed", request=request)
        timeouts = request.extensions.get("timeout", {})
        read_timeout, write_timeout = timeouts.get("read"), timeouts.get("write")
        raw = request.url.raw_path
        path, _, query = raw.partition(b"?")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (request.url.host, request.url.port or 443),
            "client": self._client,
            "state": {},
        }
        exchange = _Exchange(self._portal, anyio.create_memory_object_stream[bytes](self._BUFFER))
        self._portal.start_task_soon(exchange.run, self._app, scope)
        try:
            for piece in request.stream:  # type: ignore[union-attr]
                if piece and not exchange.feed(piece, write_timeout, request):
                    break  # the app answered without reading the rest
            exchange.end_of_body()
            status, headers = exchange.response_start(read_timeout, request)
        except BaseException:
            exchange.disconnect()
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=_ResponseBody(exchange, read_timeout, request),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )


class _Connection(httpx.BaseTransport):
    def __init__(self, server: AsgiServer) -> None:
        self._server = server

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._server.handle_request(request)


class _Exchange:
    """One request between a caller's thread and the app's task on the server's loop."""

    def __init__(self, portal: Any, body: tuple[Any, Any]) -> None:
        import anyio

        self.portal = portal
        self.body_tx, self.body_rx = body
        self.out_tx, self.out_rx = anyio.create_memory_object_stream[tuple[Any, ...]](16)
        self.gone = anyio.Event()  # the client went away

    # -- on the loop ---------------------------------------------------------------------

    async def run(self, app: AsgiApp, scope: Scope) -> None:
        import anyio

        started = finished = False
        body_done = False

        async def receive() -> Message:
            nonlocal body_done
            if not body_done:
                try:
                    piece = await self.body_rx.receive()
                except anyio.EndOfStream:
                    body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                except anyio.ClosedResourceError:  # the caller gave up on its body
                    body_done = True
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": piece, "more_body": True}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal started, finished
            if self.gone.is_set() or finished:
                return  # nobody is listening any more (uvicorn drops these too)
            kind = message["type"]
            if kind == "http.response.start" and not started:
                started = True
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
                await self._emit(("start", int(message["status"]), headers))
            elif kind == "http.response.body" and started:
                data = bytes(message.get("body", b""))
                if data:
                    await self._emit(("body", data))
                if not message.get("more_body", False):
                    finished = True
                    await self._emit(("end",))

        try:
            await app(scope, receive, send)
        except Exception as exc:
            if not finished:  # an answer that is not complete is a broken connection
                log.error(
                    "the ASGI app failed on %s %s", scope["method"], scope["path"], exc_info=exc
                )
            if not started:
                body = b"Internal Server Error"
                await self._emit(("start", 500, [(b"content-type", b"text/plain")]))
                await self._emit(("body", body))
                await self._emit(("end",))
                finished = True
        finally:  # no await in here: a cancelled request must still close its streams
            self.body_rx.close()  # a caller still sending learns that nobody reads
            self.out_tx.close()  # a caller still reading learns the end (or the break)

    async def _emit(self, event: tuple[Any, ...]) -> None:
        import anyio

        if self.gone.is_set():
            return
        # waits while the caller's thread has not read the events before (backpressure)
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self.out_tx.send(event)

    # -- in the caller's thread ----------------------------------------------------------

    def _call(self, what: Callable[..., Awaitable[Any]], timeout: float | None, *args: Any) -> Any:
        future = self.portal.start_task_soon(what, *args)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def feed(self, piece: bytes, timeout: float | None, request: httpx.Request) -> bool:
        """Hand a piece of the body to the app; False if the app stopped reading."""
        import anyio

        try:
            self._call(self.body_tx.send, timeout, piece)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        except concurrent.futures.TimeoutError:
            raise httpx.WriteTimeout("the app read none of the body", request=request) from None
        return True

    def end_of_body(self) -> None:
        self._on_loop(self.body_tx.close)

    def next_event(self, timeout: float | None, request: httpx.Request) -> tuple[Any, ...]:
        import anyio

        try:
            event: tuple[Any, ...] = self._call(self.out_rx.receive, timeout)
        except concurrent.futures.TimeoutError:
            raise httpx.ReadTimeout("the app did not answer in time", request=request) from None
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            event = ("broken",)
        if event[0] in ("end", "broken"):  # nothing more to come
            self._on_loop(self.out_rx.close)
        if event[0] == "broken":
            raise httpx.RemoteProtocolError("the app's response broke off", request=request)
        return event

    def response_start(
        self, timeout: float | None, request: httpx.Request
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        event = self.next_event(timeout, request)
        assert event[0] == "start", event
        return event[1], event[2]

    def disconnect(self) -> None:
        """The client went away: the app's ``receive`` says so, its sends go nowhere."""

        def leave() -> None:
            self.gone.set()
            self.body_tx.close()
            self.out_rx.close()

        self._on_loop(leave)

    def _on_loop(self, call: Callable[[], None]) -> None:
        """``call()`` on the server's loop, or here if the loop has stopped already."""
        try:
            self.portal.call(call)
        except RuntimeError:  # the server stopped: nothing else touches these streams
            call()


class _ResponseBody(httpx.SyncByteStream):
    def __init__(self, exchange: _Exchange, timeout: float | None, request: httpx.Request) -> None:
        self._exchange, self._timeout, self._request = exchange, timeout, request
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            event = self._exchange.next_event(self._timeout, self._request)
            if event[0] == "end":
                self._done = True
            else:
                yield event[1]

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._exchange.disconnect()
