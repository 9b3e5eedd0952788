"""HTTP transport: uvicorn's httptools (llhttp) protocol, hardened, in front of a plain ASGI app.

`HttpRequest` / `HttpResponse` are what the routes (app.py) see; `OipAsgi` adapts an ASGI http
scope and its body to one `HttpRequest` and sends the `HttpResponse` back. `GuardedProtocol`
subclasses uvicorn's `HttpToolsProtocol` (h11 is not used) to enforce what llhttp itself leaves
to the server. llhttp refuses: duplicate or list-valued Content-Length, non-digit lengths (`+N`,
`1_0`, `-3`), non-hex chunk sizes (`0x..`), any Transfer-Encoding whose last coding is not
`chunked` (`xchunked`, `chunked, gzip`), Transfer-Encoding with Content-Length, bare LF line
ends, obsolete line folding, whitespace before a header colon, versions other than 0.9-2.0.
On top of that this layer refuses, always with a JSON `{"error": ...}`, `Connection: close`, and
a count in `specml_http_refusals_total{code, reason}`:
- 400 a Transfer-Encoding other than exactly `chunked`; a missing (or repeated) Host on HTTP/1.1;
  more than `max_chunks` chunks in one body (a chunk flood); trailers over `max_header_bytes`;
- 505 an HTTP version other than 1.0 / 1.1;
- 431 a request line plus headers over `max_header_bytes` or more than `max_headers` headers,
  checked while the head streams in (a header that never ends is cut off at the limit);
- 413 a Content-Length over `max_body_bytes` (before reading the body), or a chunked body that
  grows past it (as soon as it does);
- 408 a request whose head and body take longer than `request_timeout_s` to arrive (slowloris),
  and a connection idle for `idle_timeout_s` (keep-alive, or connected and silent) is closed;
- 503 a connection beyond `max_connections` is answered at once and closed.
A malformed request pipelined behind good ones is refused only after the good ones are answered.
An exception in a route is a JSON 500 (`internal server error`, never a traceback), counted too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("specml.serving.http")

# Bytes of one packet that may belong to earlier pipelined messages (uvloop reads <= 256 KiB).
_READ_SLACK = 256 * 1024


@dataclass
class HttpRequest:
    """One request as the routes see it; header names are lower-case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpResponse:
    """What a route returns."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
# (status, reason) of a request refused or failed outside the routes, for /metrics
RefusalHook = Callable[[int, str], None]


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may send; see the module docstring for what each one answers."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_chunks: int = 65536
    max_connections: int = 2048
    idle_timeout_s: float = 5.0
    request_timeout_s: float = 30.0


def error_body(message: str) -> bytes:
    """The JSON error document every refusal carries."""
    return json.dumps({"error": message}).encode()


class _Refusal(Exception):
    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits and framing rules of the module docstring.

    `limits` and `on_refusal` are set on a per-server subclass (see `protocol_class`)."""

    limits: HttpLimits = HttpLimits()
    on_refusal: RefusalHook = staticmethod(lambda status, reason: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._deferred: _Refusal | None = None
        self._in_head = False
        self._in_message = False
        self._head_bytes = 0
        self._message_bytes = 0
        self._header_count = 0
        self._chunks = 0
        self._body_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: Any = None  # the cycle whose ASGI task started last

    # connection lifecycle
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._count(503, "connection_limit")
            self._write_refusal(503, "too many connections; retry shortly", retry_after=True)
            return
        self._arm(self.limits.idle_timeout_s, self._idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_timeout(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self._busy():
            self.transport.close()

    def _read_timeout(self) -> None:
        self._refuse(_Refusal(408, "the request took too long to arrive", "request_timeout"))

    def _busy(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    # bytes in
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, _Refusal):
                raise
            self._refuse(refusal)
            return
        except httptools.HttpParserUpgrade:
            return  # no protocol upgrades: the request itself is answered as usual
        except httptools.HttpParserError as exc:
            self._refuse(_Refusal(400, f"malformed HTTP request: {exc}", "malformed"))
            return
        limits = self.limits
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > limits.max_header_bytes + _READ_SLACK:
                self._refuse(_Refusal(431, self._head_message(), "header_too_large"))
        elif self._in_message:
            self._message_bytes += len(data)
            cap = limits.max_body_bytes + 2 * limits.max_header_bytes + 32 * limits.max_chunks
            if self._message_bytes > cap + _READ_SLACK:
                self._refuse(_Refusal(413, self._body_message(), "body_too_large"))

    def _head_message(self) -> str:
        limits = self.limits
        return (
            f"request headers exceed {limits.max_header_bytes} bytes or {limits.max_headers} fields"
        )

    def _body_message(self) -> str:
        return f"request body exceeds the {self.limits.max_body_bytes}-byte limit"

    # parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._in_message = True
        self._head_bytes = self._message_bytes = 0
        self._header_count = self._chunks = self._body_bytes = 0
        self._arm(self.limits.request_timeout_s, self._read_timeout)

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            raise _Refusal(431, self._head_message(), "header_too_large")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        self._head_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if not self._in_head:  # a trailer: never used by the routes, only bounded
            if (
                self._head_bytes > limits.max_header_bytes
                or self._header_count > 2 * limits.max_headers
            ):
                raise _Refusal(400, "request trailers exceed the header limits", "trailer_flood")
            return
        if self._head_bytes > limits.max_header_bytes or self._header_count > limits.max_headers:
            raise _Refusal(431, self._head_message(), "header_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._check_head()
        super().on_headers_complete()
        self._head_bytes = self._header_count = 0  # trailers are counted from here

    def _check_head(self) -> None:
        version = self.parser.get_http_version()
        if version not in ("1.0", "1.1"):
            raise _Refusal(505, f"HTTP/{version} is not supported; use HTTP/1.1", "bad_version")
        hosts = 0
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding" and value.strip().lower() != b"chunked":
                raise _Refusal(
                    400, "Transfer-Encoding must be exactly 'chunked'", "bad_transfer_encoding"
                )
            elif name == b"content-length" and int(value) > self.limits.max_body_bytes:
                raise _Refusal(413, self._body_message(), "body_too_large")
        if version == "1.1" and hosts != 1:
            raise _Refusal(400, "HTTP/1.1 requests need exactly one Host header", "bad_host")

    def on_chunk_header(self) -> None:
        self._chunks += 1
        if self._chunks > self.limits.max_chunks:
            raise _Refusal(
                400, f"more than {self.limits.max_chunks} chunks in one body", "chunk_flood"
            )

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Refusal(413, self._body_message(), "body_too_large")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._disarm()  # from here uvicorn's keep-alive timer takes over, once answered
        super().on_message_complete()

    # refusals
    def _count(self, status: int, reason: str) -> None:
        try:
            self.on_refusal(status, reason)
        except Exception:  # counting must never break the connection
            log.exception("cannot count a refusal")

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer `refusal` once every request parsed before it is answered, then close."""
        if self._refused:
            return
        self._refused = True
        self._disarm()
        self._count(refusal.status, refusal.reason)
        self.flow.pause_reading()
        cycle, broken = self.cycle, None
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            # the broken request itself was already handed on: it gets the refusal, not an answer
            broken = cycle
            cycle.disconnected = True
            cycle.message_event.set()
            self.pipeline = type(self.pipeline)(p for p in self.pipeline if p[0] is not cycle)
        running = self._running
        if self.pipeline or (
            running is not None and running is not broken and not running.response_complete
        ):
            self._deferred = refusal  # sent by on_response_complete once those are answered
            return
        self._write_refusal(refusal.status, refusal.message)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        if self._deferred is not None and not self.pipeline:
            refusal, self._deferred = self._deferred, None
            self._write_refusal(refusal.status, refusal.message)
            return
        super().on_response_complete()

    def _write_refusal(self, status: int, message: str, retry_after: bool = False) -> None:
        self._refused = True
        if self.transport.is_closing():
            return
        body = error_body(message)
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if retry_after:
            head.append("retry-after: 1")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.transport.close()


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def protocol_class(limits: HttpLimits, on_refusal: RefusalHook) -> type[GuardedProtocol]:
    """A GuardedProtocol subclass bound to one server's limits and refusal counter."""
    return type(
        "SpecmlHttpProtocol",
        (GuardedProtocol,),
        {"limits": limits, "on_refusal": staticmethod(on_refusal)},
    )


class OipAsgi:
    """The ASGI app: one `HttpRequest` per http scope, handed to `handle`; lifespan is a no-op."""

    def __init__(self, handle: Handler, on_failure: Callable[[HttpRequest], None]) -> None:
        self._handle = handle
        self._on_failure = on_failure

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = HttpRequest(
            scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers, body
        )
        try:
            response = await self._handle(request)
        except Exception:  # a route's bug: logged here, a bare 500 to the client
            log.exception("unhandled error serving %s %s", request.method, request.path)
            self._on_failure(request)
            response = HttpResponse(500, error_body("internal server error"))
        out = [
            (b"content-type", response.content_type.encode("latin-1")),
            (b"content-length", str(len(response.body)).encode("latin-1")),
        ]
        out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items())
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": response.body})
