"""HTTP plumbing of FakeSynerise: server, handler, Spring error bodies, raw writes."""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "MAX_REQUEST_BYTES",
    "Handler",
    "Response",
    "Server",
    "error_response",
    "field_error",
    "json_response",
    "read_body",
    "reset_connection",
    "spring_error",
    "write_response",
]

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024


@dataclass
class Response:
    """An answer to write: status, body bytes, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    """Return a JSON :class:`Response`."""
    return Response(status, json.dumps(data).encode("utf-8"), headers=dict(headers or {}))


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # noqa: UP017


def spring_error(
    status: int,
    message: str,
    path: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Return a Spring-style error body as Synerise sends it."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {
        "status": status,
        "error": error or phrase,
        "message": message,
        "path": path,
        "timestamp": _timestamp(),
        "errors": errors or [],
    }


def field_error(name: str, message: str, rejected: Any = None) -> dict[str, Any]:
    """Return one entry of a Spring error body's ``errors`` list."""
    return {"code": 400, "field": name, "message": message, "rejectedValue": rejected}


def error_response(
    status: int,
    message: str,
    path: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Return a Spring-style error :class:`Response`."""
    return json_response(status, spring_error(status, message, path, errors=errors), headers)


class Server(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server whose handlers call ``fake._handle(handler)``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: Any) -> None:
        self.fake = fake
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep stderr quiet: clients that hang up are normal; other errors go to the logger."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            logger.debug("FakeSynerise connection error from %s: %s", client_address, exc)
        else:
            logger.error("FakeSynerise handler error", exc_info=exc)


class Handler(BaseHTTPRequestHandler):
    """Keep-alive request handler; every method goes to the owning fake."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "FakeSynerise/1.0"
    sys_version = ""
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the default stderr access log."""

    def _dispatch(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


def read_body(handler: Handler) -> bytes | None:
    """Read the request body (Content-Length or chunked); None when malformed or too large."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(handler)
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        return None
    if not 0 <= length <= MAX_REQUEST_BYTES:
        return None
    return handler.rfile.read(length) if length else b""


def _read_chunked(handler: Handler) -> bytes | None:
    """Read a chunked request body; None when it is malformed or too large."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = handler.rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return None
        if size == 0:
            while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        total += size
        if total > MAX_REQUEST_BYTES:
            return None
        parts.append(handler.rfile.read(size))
        handler.rfile.readline(1024)


def write_response(
    handler: Handler,
    response: Response,
    *,
    stop: threading.Event,
    send_bytes: int | None = None,
    trickle: float | None = None,
    close: bool = True,
) -> None:
    """Send ``response`` with an exact Content-Length (headers and body in one write).

    ``send_bytes`` sends only that much of the body (a truncated answer); ``trickle`` sends the
    body one byte every ``trickle`` seconds until ``stop`` is set; ``close=False`` leaves out
    the ``Connection: close`` header. Client disconnects are swallowed.
    """
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"Server: {handler.server_version}",
        f"Content-Length: {len(response.body)}",
    ]
    if response.body or response.content_type != "application/json":
        lines.append(f"Content-Type: {response.content_type}")
    lines.extend(f"{name}: {value}" for name, value in response.headers.items())
    if handler.close_connection and close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    body = response.body
    if handler.command == "HEAD":
        body = b""
    if send_bytes is not None:
        body = body[:send_bytes]
    try:
        if trickle is None:
            handler.wfile.write(head + body)
            return
        handler.wfile.write(head)
        for i in range(len(body)):
            if stop.wait(trickle):
                break
            handler.wfile.write(body[i : i + 1])
    except OSError:
        handler.close_connection = True


def reset_connection(handler: Handler) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
    handler.close_connection = True
    conn = handler.connection
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass
