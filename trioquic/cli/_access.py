"""The access log of ``trioquic serve``: one line per request on the
``trioquic.serve.access`` logger, for the built-in server and for ASGI
applications alike::

    127.0.0.1:50622 "GET /notes.txt HTTP/3" 200 11 0.4ms

(client, request line with the HTTP version it came over, status, body bytes
sent, duration, and `` (aborted)`` when the response did not complete)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..asgi import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("trioquic.serve.access")


def format_peer(address: Any) -> str:
    """A client address for the log (``-`` if unknown)."""
    if isinstance(address, tuple | list) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return "-" if address is None else str(address)


def log_request(
    peer: Any,
    method: str,
    target: str,
    http_version: str,
    status: int | None,
    sent: int,
    start: float,
    *,
    completed: bool,
) -> None:
    """One access-log line; ``start`` is a :func:`time.monotonic` reading."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    access_logger.info(
        '%s "%s %s HTTP/%s" %s %d %.1fms%s',
        format_peer(peer),
        method,
        target,
        http_version,
        status or "-",
        sent,
        (time.monotonic() - start) * 1000,
        "" if completed else " (aborted)",
    )


class AccessLog:
    """ASGI middleware logging each ``http`` request of ``app`` (other
    scopes, lifespan and websocket, pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status: int | None = None
        sent = 0
        done = False

        async def logged_send(message: Message) -> None:
            nonlocal status, sent, done
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
                done = not message.get("more_body", False)
            elif kind == "http.response.pathsend":
                done = True
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            query = scope.get("query_string", b"")
            target = scope.get("raw_path") or scope["path"].encode()
            if isinstance(target, str):
                target = target.encode()
            if query:
                target += b"?" + query
            log_request(
                scope.get("client"),
                scope["method"],
                target.decode("latin-1"),
                scope.get("http_version", "1.1"),
                status,
                sent,
                start,
                completed=done,
            )
