"""A small HTTP/1.1 server on asyncio: keep-alive, pipelining, Content-Length and chunked bodies.

Why hand-rolled: at batch 1 the model runs in ~0.1 ms, so per-request framework overhead is the
latency budget. This parser does only what an inference endpoint needs, with hard limits on header
and body sizes, and hands each complete request to one async handler. Requests on a connection are
answered in order; a connection that sends garbage gets a 4xx and is closed, nothing else is hurt.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

log = logging.getLogger("specml.serving.http")

MAX_HEADER_BYTES = 16 * 1024
MAX_PIPELINED = 32


@dataclass
class HttpRequest:
    """One parsed request; header names are lower-case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpResponse:
    """What a handler returns."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_body(message: str) -> bytes:
    import json

    return json.dumps({"error": message}).encode()


def render_response(response: HttpResponse, keep_alive: bool) -> bytes:
    """Serialise a response with Content-Length framing."""
    reason = _REASONS.get(response.status, "Unknown")
    head = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
    ]
    head.extend(f"{k}: {v}" for k, v in response.headers.items())
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


def _parse_chunked(buf: bytearray, start: int, limit: int) -> tuple[bytes, int] | None:
    """Decode a chunked body from buf[start:]; None while incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 1024:
                raise _BadRequest(400, "malformed chunk size line")
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadRequest(400, "malformed chunk size") from None
        if size < 0 or len(body) + size > limit:
            raise _BadRequest(413, f"request body exceeds the {limit}-byte limit")
        pos = eol + 2
        if size == 0:
            # skip trailers up to the blank line
            end = buf.find(b"\r\n", pos)
            while end >= 0 and end != pos:
                pos = end + 2
                end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            return bytes(body), end + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise _BadRequest(400, "malformed chunk terminator")
        pos += size + 2


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(
        self, handler: Handler, max_body_bytes: int, connections: set[HttpProtocol]
    ) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._connections = connections
        self._buf = bytearray()
        self._requests: deque[tuple[HttpRequest, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._paused = False
        self._sent_continue = False
        self._pending_failure = HttpResponse(400)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)

    @property
    def idle(self) -> bool:
        return not self._requests and (self._worker is None or self._worker.done())

    def close(self) -> None:
        """Close the connection (graceful shutdown calls this once it is idle)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        try:
            while self._parse_one():
                pass
        except _BadRequest as exc:
            self._fail(exc.status, exc.message)
            return
        if len(self._requests) >= MAX_PIPELINED and not self._paused and self._transport:
            self._transport.pause_reading()
            self._paused = True
        if self._requests and (self._worker is None or self._worker.done()):
            self._worker = asyncio.get_running_loop().create_task(self._serve_queue())

    def _parse_one(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise _BadRequest(431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
            return False
        if end > MAX_HEADER_BYTES:
            raise _BadRequest(431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
        try:
            head = bytes(buf[:end]).decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise _BadRequest(400, "undecodable request head") from None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "malformed header line")
            headers[name.lower()] = value.strip()
        body_start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            if "content-length" in headers:
                raise _BadRequest(400, "both Content-Length and Transfer-Encoding given")
            decoded = _parse_chunked(buf, body_start, self._max_body)
            if decoded is None:
                self._maybe_continue(headers)
                return False
            body, consumed = decoded
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest(400, "Content-Length is not an integer") from None
            if length < 0:
                raise _BadRequest(400, "negative Content-Length")
            if length > self._max_body:
                raise _BadRequest(413, f"request body exceeds the {self._max_body}-byte limit")
            if len(buf) < body_start + length:
                self._maybe_continue(headers)
                return False
            body = bytes(buf[body_start : body_start + length])
            consumed = body_start + length
        del buf[:consumed]
        self._sent_continue = False
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        path, _, query = target.partition("?")
        self._requests.append((HttpRequest(method, path, query, headers, body), keep_alive))
        return True

    def _maybe_continue(self, headers: dict[str, str]) -> None:
        if headers.get("expect", "").lower() == "100-continue" and not self._sent_continue:
            self._sent_continue = True
            if self._transport:
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _fail(self, status: int, message: str) -> None:
        # Answer the broken request after any good ones already queued, then close.
        self._closing = True
        self._buf.clear()
        response = HttpResponse(status, _error_body(message))
        if self._worker is None or self._worker.done():
            self._write(render_response(response, keep_alive=False), close=True)
        else:
            self._requests.append((HttpRequest("", "", "", {}, b""), False))
            self._pending_failure = response

    def _write(self, data: bytes, close: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(data)
        if close:
            self._transport.close()

    async def _serve_queue(self) -> None:
        while self._requests:
            request, keep_alive = self._requests.popleft()
            if self._paused and len(self._requests) < MAX_PIPELINED // 2 and self._transport:
                self._transport.resume_reading()
                self._paused = False
            if not request.method:  # the marker _fail queued behind good requests
                self._write(render_response(self._pending_failure, False), close=True)
                return
            try:
                response = await self._handler(request)
            except Exception:  # a handler bug must not take the connection's other requests
                log.exception("unhandled error serving %s %s", request.method, request.path)
                response = HttpResponse(500, _error_body("internal server error"))
            self._write(render_response(response, keep_alive), close=not keep_alive)
            if not keep_alive:
                return


class HttpServer:
    """Binds a handler to host:port on the running loop; `close()` drains in-flight requests."""

    def __init__(self, handler: Handler, max_body_bytes: int) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._connections: set[HttpProtocol] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (useful with port=0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self._handler, self._max_body, self._connections),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), close."""
        if self._server is None:
            return
        self._server.close()
        deadline = asyncio.get_running_loop().time() + grace_seconds
        while any(not c.idle for c in self._connections):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        for conn in list(self._connections):
            conn.close()
        await self._server.wait_closed()
