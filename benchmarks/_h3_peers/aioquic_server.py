"""A minimal HTTP/3 server on aioquic's asyncio layer, built like aioquic's
example server: a ``QuicConnectionProtocol`` subclass creates an
``H3Connection`` once ALPN "h3" is negotiated, feeds it every QUIC event, and
answers each complete request with ``send_headers`` + ``send_data`` and one
``transmit()``. A body larger than 64 KiB is handed over as 64 KiB
``send_data`` calls in one go (aioquic's H3 layer has no backpressure, so it
buffers the whole body, as the example server does for an ASGI app that
sends it at once). Like the example server it issues session tickets and
keeps them in a store (each usable once).

qh3, aioquic's fork, keeps aioquic's asyncio and HTTP/3 API, so
``qh3_server.py`` is this same server built on qh3's modules
(``make_protocol("qh3")``, ``main(args, "qh3")``).

``GET /bytes/<n>`` answers ``n`` bytes; anything else 404. The server exits
after ``--lifetime`` seconds so that it never outlives the benchmark.

Run it::

    python benchmarks/_h3_peers/aioquic_server.py --port 4433 --cert C --key K
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import HOST, answer, pin_to, quic_configuration, server_parser


def make_protocol(library: str = "aioquic") -> type:
    """The server's protocol class on ``library``'s asyncio layer (aioquic or
    qh3: the same API)."""
    asyncio_layer = importlib.import_module(f"{library}.asyncio")
    h3 = importlib.import_module(f"{library}.h3.connection")
    h3_events = importlib.import_module(f"{library}.h3.events")
    quic_events = importlib.import_module(f"{library}.quic.events")
    QuicConnectionProtocol = asyncio_layer.QuicConnectionProtocol
    H3_ALPN, H3Connection = h3.H3_ALPN, h3.H3Connection
    DataReceived, HeadersReceived = h3_events.DataReceived, h3_events.HeadersReceived
    H3Event, QuicEvent = h3_events.H3Event, quic_events.QuicEvent
    ProtocolNegotiated = quic_events.ProtocolNegotiated

    class Http3ServerProtocol(QuicConnectionProtocol):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._http: H3Connection | None = None
            # stream id -> (method, path) of requests whose body has not ended.
            self._pending: dict[int, tuple[bytes, bytes]] = {}

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
                self._http = H3Connection(self._quic)
            if self._http is not None:
                for http_event in self._http.handle_event(event):
                    self.http_event_received(http_event)

        def http_event_received(self, event: H3Event) -> None:
            if isinstance(event, HeadersReceived):
                method = path = b""
                for name, value in event.headers:
                    if name == b":method":
                        method = value
                    elif name == b":path":
                        path = value
                if event.stream_ended:
                    self.respond(event.stream_id, method, path)
                else:
                    self._pending[event.stream_id] = (method, path)
            elif isinstance(event, DataReceived) and event.stream_ended:
                request = self._pending.pop(event.stream_id, None)
                if request is not None:
                    self.respond(event.stream_id, *request)

        def respond(self, stream_id: int, method: bytes, path: bytes) -> None:
            http = self._http
            assert http is not None
            status, headers, pieces = answer(method, path)
            http.send_headers(stream_id, [(b":status", str(status).encode()), *headers])
            for piece, last in pieces:
                http.send_data(stream_id, piece, end_stream=last)
            self.transmit()

    return Http3ServerProtocol


class SessionTicketStore:
    """Session tickets issued, each usable once: aioquic's example server
    keeps one of these, so its server issues a ticket per connection (as
    trioquic's does)."""

    def __init__(self) -> None:
        self.tickets: dict[bytes, Any] = {}

    def add(self, ticket: Any) -> None:
        self.tickets[ticket.ticket] = ticket

    def pop(self, label: bytes) -> Any:
        return self.tickets.pop(label, None)


async def main(args: argparse.Namespace, library: str = "aioquic") -> None:
    serve = importlib.import_module(f"{library}.asyncio").serve
    config = quic_configuration(library, is_client=False, congestion_control=args.cc)
    config.load_cert_chain(args.cert, args.key)
    tickets = SessionTicketStore()
    server = await serve(
        HOST,
        args.port,
        configuration=config,
        create_protocol=make_protocol(library),
        session_ticket_fetcher=tickets.pop,
        session_ticket_handler=tickets.add,
    )
    try:
        print(f"serving on {HOST}:{args.port}", flush=True)
        await asyncio.sleep(args.lifetime)
    finally:
        server.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = server_parser(__doc__.splitlines()[0])
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    pin_to(arguments.cpu)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(arguments))
