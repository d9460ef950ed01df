"""What a client may hold of the server: connections, time to send headers and body, body size.

Two layers, both set up by ``charops.serve.server``:

- :func:`guarded_protocol` wraps uvicorn's HTTP protocol (httptools, else h11) with what
  uvicorn lacks: a deadline for a request's headers (a fresh or kept-alive connection that
  sends nothing, or sends headers a byte at a time, is closed after ``read_timeout_s``), a cap
  on header bytes (431), and a cap on open connections (one over it is answered 503 and
  closed at once). uvicorn's own ``timeout_keep_alive`` closes idle kept-alive connections.
- :class:`Guard`, pure ASGI middleware: the Bearer key on everything but the health probes,
  and the request body read here, before any route sees it, within ``max_body_bytes``
  (413) and ``read_timeout_s`` (408).

Every refusal is an OpenAI-style error body. A test opens raw sockets against a real server
(tests/unit/test_serve_faults.py)::

    python -m charops.serve.server --model runs/dpo/model --read-timeout-s 10 --max-connections 128
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
from http import HTTPStatus
from typing import Any

from charops.serve.openai_api import APIError


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Per-connection limits of the HTTP server (see docs/serving.md, "Limits")."""

    read_timeout_s: float = 10.0  # headers within this, then the body within this again
    keep_alive_s: int = 5  # an idle kept-alive connection is closed after this
    max_connections: int = 128  # open connections; one more is answered 503 and closed
    max_header_bytes: int = 32 * 1024  # request line plus headers
    max_body_bytes: int = 1 << 20


def _raw_response(err: APIError) -> bytes:
    """A whole HTTP/1.1 response for a refusal written straight to the socket."""
    body = json.dumps(err.body()).encode()
    head = (f"HTTP/1.1 {err.status} {HTTPStatus(err.status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def _base_protocol() -> type:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:  # httptools is uvicorn[standard]'s; h11 always comes with uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def guarded_protocol(limits: HttpLimits, base: type | None = None) -> type:
    """uvicorn's HTTP protocol class with a header deadline, a header cap and a connection cap
    (pass it as ``uvicorn.Config(http=...)``)."""
    base = base or _base_protocol()

    class GuardedProtocol(base):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._header_bytes = 0
            self._started_cycle: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(_raw_response(APIError(
                    503, f"the server holds {limits.max_connections} connections already; retry shortly",
                    type="server_error", code="too_many_connections")))
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            """Start the clock for the next request's headers (a fresh connection, or the first
            bytes after a response)."""
            if self._deadline is None:
                self._header_bytes = 0
                self._deadline = self.loop.call_later(limits.read_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._header_bytes:  # a request was begun: say why it ends
                self.transport.write(_raw_response(APIError(
                    408, f"the request headers did not arrive within {limits.read_timeout_s:g} s",
                    code="request_timeout")))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            waiting = self._between_requests()
            if waiting:
                self._arm()
                self._header_bytes += len(data)
            super().data_received(data)
            if self.cycle is not None and self.cycle is not self._started_cycle:
                self._started_cycle = self.cycle  # the headers are complete: a request runs
                self._disarm()
            elif waiting and self._header_bytes > limits.max_header_bytes and not self.transport.is_closing():
                self._disarm()
                self.transport.write(_raw_response(APIError(
                    431, f"the request headers are over {limits.max_header_bytes} bytes",
                    code="headers_too_large")))
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # the keep-alive timer now watches the connection

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


class Guard:
    """Pure ASGI middleware: Bearer key on everything but the health probes, then the body.

    The body of a POST, PUT or PATCH is read here, whole, before the route runs: over
    ``max_body_bytes`` (by Content-Length, or counted while read) is a 413, not all there
    within ``read_timeout_s`` a 408; the route then reads the same bytes.
    """

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int, open_paths: set[str],
                 read_timeout_s: float = HttpLimits.read_timeout_s):
        self.app, self.api_key, self.max_body = app, api_key, max_body_bytes
        self.open_paths, self.read_timeout_s = open_paths, read_timeout_s

    async def _refuse(self, send: Any, err: APIError) -> None:
        body = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if err.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if err.status in (408, 413):  # the rest of the body is not read: end the connection
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, receive: Any) -> bytes | APIError | None:
        """The whole body, an error to answer with, or None when the client went away."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        chunks, size = [], 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return APIError(408, f"the request body did not arrive within {self.read_timeout_s:g} s",
                                code="request_timeout")
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return APIError(413, f"the request body is over {self.max_body} bytes", code="request_too_large")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key and scope["path"] not in self.open_paths:
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                return await self._refuse(send, APIError(
                    401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                    type="invalid_request_error", code="invalid_api_key"))
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await self._refuse(send, APIError(400, "bad Content-Length header"))
            if int(length) > self.max_body:
                return await self._refuse(send, APIError(
                    413, f"the request body is over {self.max_body} bytes", code="request_too_large"))
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body = await self._read_body(receive)
        if body is None:
            return
        if isinstance(body, APIError):
            return await self._refuse(send, body)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
