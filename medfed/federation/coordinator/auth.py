"""The API's gate: who signed a request, what their role allows, and how a refusal is written.

The signature is checked before FastAPI parses or validates anything (a custom route class), so
an unsigned request is a 401 whatever its body. Every refusal is a 4xx with one sentence and a
line in the audit log naming who asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from medfed.errors import MedfedError
from medfed.federation.coordinator.checks import invalid_sentence
from medfed.federation.coordinator.store import Store
from medfed.federation.identity.certificates import CertificateBook
from medfed.federation.identity.signing import CERT_HEADER, AuthError, Principal, verify_request

__all__ = ["CHUNK_SIZE", "MAX_JSON_BODY", "OPEN_ROUTES", "Gate", "Refusal", "body_limit"]

CHUNK_SIZE = 8 << 20  # the body of an upload chunk: exactly this, or the blob's last bytes
MAX_JSON_BODY = 1 << 20  # every other body is JSON: a reply header, a job, an approval
_CHUNK_ROUTE = re.compile(r"/v1/uploads/[^/]+/chunks/[^/]+")
OPEN_ROUTES = frozenset({"/v1/health"})  # the only route that needs no signed request


def body_limit(method: str, path: str) -> int:
    """The largest body a route takes: an upload chunk's size, or a small JSON document."""
    return CHUNK_SIZE if method == "PUT" and _CHUNK_ROUTE.fullmatch(path) else MAX_JSON_BODY


class Refusal(HTTPException):
    """A refusal that is already written to the audit log."""


def _storable(text: str) -> str:
    """``text`` as every SQL database stores it: NUL and lone surrogates written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class Gate:
    """Authenticates requests against the federation CA and audits every refusal."""

    def __init__(
        self,
        *,
        store: Store,
        ca_cert_pem: bytes,
        consortium: str,
        body_stall_seconds: float = 30.0,
    ) -> None:
        from cryptography import x509

        self.body_stall_seconds = body_stall_seconds
        self.store = store
        self.consortium = consortium
        self.ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        self.certificates = CertificateBook(store.engine)

    def refuse(
        self, p: Principal | None, status: int, action: str, target: str, reason: str
    ) -> Refusal:
        """Write the refusal to the audit log and return the exception to raise."""
        # a refusal may quote what the caller sent: keep it storable (no NUL, valid UTF-8)
        action, target, reason = (_storable(t) for t in (action, target, reason))
        self.store.audit(
            principal=p.name if p else "anonymous",
            role=p.role if p else "-",
            action=action,
            target=target,
            outcome="refused",
            detail=reason,
        )
        return Refusal(status_code=status, detail=reason)

    @staticmethod
    def principal_of(request: Request) -> Principal | None:
        p = getattr(request.state, "principal", None)
        return p if isinstance(p, Principal) else None

    async def authenticate(self, request: Request) -> Principal:
        """Who signed this request (or a refusal); runs before FastAPI parses the body."""
        body = request._body = await self._read_body(request)  # what request.body() returns
        path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        if request.scope.get("query_string"):
            path += "?" + request.scope["query_string"].decode("latin-1")
        p = await run_in_threadpool(self._verify, request, path, body)
        request.state.principal = p
        return p

    async def _read_body(self, request: Request) -> bytes:
        """The body, within its route's limit, refused when it stops arriving (a declared
        length larger than what is sent must not hold a worker for ever)."""
        limit = body_limit(request.method, request.url.path)
        action = f"{request.method} {request.url.path}"
        too_large = f"request body too large (at most {limit} bytes here); send tensors in chunks"
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise await run_in_threadpool(self.refuse, None, 413, action, "", too_large)
        parts, size = [], 0
        stream = request.stream().__aiter__()
        while True:  # bounded even without a content-length
            try:
                part = await asyncio.wait_for(anext(stream), self.body_stall_seconds)
            except StopAsyncIteration:
                break
            except TimeoutError:
                stalled = (
                    f"the request body stopped arriving ({size} bytes in, nothing for "
                    f"{self.body_stall_seconds:g} s); send it again"
                )
                raise await run_in_threadpool(self.refuse, None, 408, action, "", stalled) from None
            size += len(part)
            if size > limit:
                raise await run_in_threadpool(self.refuse, None, 413, action, "", too_large)
            parts.append(part)
        return b"".join(parts)

    def _verify(self, request: Request, path: str, body: bytes) -> Principal:
        action = f"{request.method} {request.url.path}"
        # kept for the route: an upload chunk is checked against its X-Chunk-Sha256 with it
        digest = request.state.body_sha256 = hashlib.sha256(body).hexdigest()
        try:
            p = verify_request(
                request.headers,
                method=request.method,
                path=path,
                body_sha256=digest,
                ca_cert=self.ca_cert,
                consortium=self.consortium,
                now=time.time(),
                remember_nonce=self.store.remember_nonce,
            )
        except AuthError as exc:
            raise self.refuse(None, 401, action, "", str(exc)) from None
        if self.store.is_revoked(p.name):
            reason = "this identity has been revoked by the federation's admin"
            raise self.refuse(p, 403, action, p.name, reason)
        self.store.touch_participant(p.name, p.role, p.fingerprint)
        # the certificate verified just now: peers of secure aggregation check keys with it
        self.certificates.remember(
            p.name, base64.b64decode(request.headers[CERT_HEADER]), p.fingerprint
        )
        return p

    def route_class(self) -> type[APIRoute]:
        """A route class that checks the signature before anything else happens."""
        gate = self

        class SignedRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Any]:
                handler = super().get_route_handler()
                if self.path in OPEN_ROUTES:
                    return handler

                async def signed_first(request: Request) -> Response:
                    try:
                        p = await gate.authenticate(request)
                    except ClientDisconnect:
                        # the client left in the middle of its body (a broken connection; it
                        # resumes later): nothing was done, and nobody is there to answer
                        return Response(status_code=499)
                    if "\x00" in request.url.path:  # no id or name holds one; a DB may choke
                        action = f"{request.method} {request.url.path}"
                        raise await run_in_threadpool(
                            gate.refuse, p, 404, action, "", "no such resource"
                        )
                    response: Response = await handler(request)
                    return response

                return signed_first

        return SignedRoute

    async def authenticated(self, request: Request) -> Principal:
        """Dependency: the signer of this request."""
        p = self.principal_of(request)
        if p is None:  # every route but the open ones is a SignedRoute
            raise HTTPException(401, "this request was not signed")
        return p

    def need(self, role: str, *roles: str) -> Callable[..., Any]:
        """Dependency: the signer, who must hold one of these roles."""
        allowed = {role, *roles}

        async def dep(p: Principal = Depends(self.authenticated)) -> Principal:
            if p.role not in allowed:
                reason = f"this needs a {' or '.join(sorted(allowed))} identity"
                raise await run_in_threadpool(self.refuse, p, 403, "role", "", reason)
            return p

        return dep

    def install(self, app: FastAPI) -> None:
        """Sign-first routes, and error handlers that turn every refusal into an audited 4xx."""
        app.router.route_class = self.route_class()

        @app.exception_handler(StarletteHTTPException)
        async def _refused(request: Request, exc: StarletteHTTPException) -> Response:
            # a route's own refusals are audited where they are raised; FastAPI's (a body that
            # does not parse) and a bad Range are audited here. Unknown paths match no route.
            if (
                not isinstance(exc, Refusal)
                and "endpoint" in request.scope
                and exc.status_code < 500
            ):
                await run_in_threadpool(
                    self.refuse,
                    self.principal_of(request),
                    exc.status_code,
                    f"{request.method} {request.url.path}",
                    "",
                    str(exc.detail),
                )
            return await http_exception_handler(request, exc)

        @app.exception_handler(RequestValidationError)
        async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
            reason = invalid_sentence(exc)
            action = f"{request.method} {request.url.path}"
            p = self.principal_of(request)
            await run_in_threadpool(self.refuse, p, 422, action, "", reason)
            return JSONResponse({"detail": reason}, status_code=422)

        @app.exception_handler(MedfedError)
        async def _medfed_error(request: Request, exc: MedfedError) -> JSONResponse:
            action = f"{request.method} {request.url.path}"
            p = self.principal_of(request)
            await run_in_threadpool(self.refuse, p, 400, action, "", str(exc))
            return JSONResponse({"detail": str(exc)}, status_code=400)
