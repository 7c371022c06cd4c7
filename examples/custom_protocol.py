"""A protocol of your own over QUIC: a tiny key/value store, written as an
``ApplicationOverQuic``.

What it shows: the six hooks an application implements, which the IoWorker
(the task that drives one QUIC connection) calls around every driver step:

* ``on_connection_established(io, handshake)``: once, when the handshake is
  done; ``io`` is the connection's ``ConnectionIO`` (open streams, send, close);
* ``should_act()``: whether the read and write hooks run in this step;
* ``wait_for_data(io)``: awaits the application's *own* input in a task of the
  connection's nursery; each time it returns the worker runs a step;
* ``process_reads(io, events)``: the step's transport events
  (``StreamDataReceived``, ``StreamResetReceived``, ...);
* ``process_writes(io)``: write what is ready, just before datagrams are sent;
* ``on_connection_close(io, reason)``: once, however the connection ends.

Hooks other than ``wait_for_data`` are plain functions: they change the QUIC
state and return, and the worker flushes the resulting packets in one batch.

The protocol (ALPN ``trioquic-kv``): a request is one bidirectional stream
that carries one line and a FIN: ``SET key value``, ``GET key`` or
``DEL key``. The reply comes back on the same stream, one line and a FIN:
``OK``, ``VALUE value``, ``NOT_FOUND`` or ``ERROR why``. Requests on
different streams run concurrently. A request longer than 4 KiB closes the
connection with the application error KV_PROTOCOL_ERROR.

How to run it (from the repository root, with trioquic installed)::

    python examples/custom_protocol.py                # server + client, one process

or the two sides separately::

    python examples/custom_protocol.py --server --port 4434
    python examples/custom_protocol.py --client --port 4434 \\
        --ca-certs /tmp/trioquic-XXXX/cert.pem SET colour blue, GET colour

(the server prints its certificate path and the client command). Client
requests are separated by commas; without any, a short demo runs.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from collections.abc import Sequence

import trio

import trioquic

ALPN = "trioquic-kv"
MAX_REQUEST = 4096
#: Application error code for a peer that breaks the protocol.
KV_PROTOCOL_ERROR = 0x10


def answer(store: dict[str, str], line: str) -> str:
    """The reply to one request line (pure: easy to test)."""
    command, _, rest = line.strip().partition(" ")
    command = command.upper()
    if command == "SET":
        key, _, value = rest.partition(" ")
        if not key or not value:
            return "ERROR usage: SET key value"
        store[key] = value
        return "OK"
    if command == "GET" and rest and " " not in rest:
        return f"VALUE {store[rest]}" if rest in store else "NOT_FOUND"
    if command == "DEL" and rest and " " not in rest:
        return "OK" if store.pop(rest, None) is not None else "NOT_FOUND"
    return f"ERROR unknown request: {line.strip()!r}"


# -- server side --------------------------------------------------------------


class KeyValueServer(trioquic.ApplicationOverQuic):
    """One per connection; every connection shares the same ``store``."""

    def __init__(self, store: dict[str, str]) -> None:
        self.store = store
        self.requests: dict[int, bytearray] = {}  # stream id -> request so far
        self.replies: dict[int, bytes] = {}  # stream id -> reply not yet sent
        self.closing = False

    def on_connection_established(
        self, io: trioquic.ConnectionIO, handshake: trioquic.HandshakeInfo
    ) -> None:
        print(f"server: connection from {io.peer_address} ({handshake.alpn_protocol})")

    def should_act(self) -> bool:
        # After we decided to close the connection, ignore whatever arrives.
        return not self.closing

    def process_reads(
        self, io: trioquic.ConnectionIO, events: Sequence[trioquic.QuicEvent]
    ) -> None:
        for event in events:
            if isinstance(event, trioquic.StreamDataReceived):
                self._on_data(io, event)
            elif isinstance(event, trioquic.StreamResetReceived):
                # The client gave up on this request: forget it.
                self.requests.pop(event.stream_id, None)
                self.replies.pop(event.stream_id, None)

    def _on_data(
        self, io: trioquic.ConnectionIO, event: trioquic.StreamDataReceived
    ) -> None:
        if event.stream_id & 0x3 != 0:
            return  # only client-initiated bidirectional streams carry requests
        request = self.requests.setdefault(event.stream_id, bytearray())
        request += event.data
        if len(request) > MAX_REQUEST:
            self.closing = True
            io.close(KV_PROTOCOL_ERROR, "request too long")
            return
        if event.end_stream:
            del self.requests[event.stream_id]
            line = request.decode(errors="replace")
            self.replies[event.stream_id] = (answer(self.store, line) + "\n").encode()

    def process_writes(self, io: trioquic.ConnectionIO) -> None:
        for stream_id, reply in self.replies.items():
            io.send_stream_data(stream_id, reply, end_stream=True)
        self.replies.clear()

    def on_connection_close(
        self, io: trioquic.ConnectionIO, reason: trioquic.CloseReason
    ) -> None:
        print(f"server: connection {reason}")


# -- client side -----------------------------------------------------------------


class _Request:
    def __init__(self, line: str) -> None:
        self.data = (line + "\n").encode()
        self.reply = bytearray()
        self.done = trio.Event()
        self.error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class KeyValueClient(trioquic.ApplicationOverQuic):
    """The client: ``await kv.request("GET colour")`` from any task.

    Requests travel from the caller's task to the connection through a
    bounded memory channel, which ``wait_for_data`` reads: the same shape as
    tokio-quiche applications that take their input from a channel.
    """

    def __init__(self, max_queued: int = 16) -> None:
        self._send, self._receive = trio.open_memory_channel[_Request](max_queued)
        self._ready: list[_Request] = []  # received from the channel, not sent
        self._in_flight: dict[int, _Request] = {}  # stream id -> request
        self._error: BaseException | None = None

    # The public API, used from the caller's tasks.

    async def request(self, line: str) -> str:
        """Send one request line; return the reply line."""
        if self._error is not None:
            raise self._error
        request = _Request(line)
        await self._send.send(request)
        if self._error is not None:  # closed while we waited for room
            raise self._error
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.reply.decode().rstrip("\n")

    # The six hooks, called by the connection's IoWorker.

    def on_connection_established(
        self, io: trioquic.ConnectionIO, handshake: trioquic.HandshakeInfo
    ) -> None:
        print(f"client: connected ({handshake.alpn_protocol})")

    def should_act(self) -> bool:
        return True

    async def wait_for_data(self, io: trioquic.ConnectionIO) -> None:
        # Runs in the connection's nursery; returning asks for a driver step,
        # whose process_writes sends what we queued here.
        request = await self._receive.receive()
        if self._error is not None:
            # The connection ended while this task was being woken up with
            # the request: on_connection_close has run already.
            request.fail(self._error)
        else:
            self._ready.append(request)

    def process_reads(
        self, io: trioquic.ConnectionIO, events: Sequence[trioquic.QuicEvent]
    ) -> None:
        for event in events:
            if isinstance(event, trioquic.StreamDataReceived):
                request = self._in_flight.get(event.stream_id)
                if request is None:
                    continue
                request.reply += event.data
                if len(request.reply) > MAX_REQUEST:
                    del self._in_flight[event.stream_id]
                    io.stop_stream(event.stream_id, KV_PROTOCOL_ERROR)
                    request.fail(ValueError("reply too long"))
                elif event.end_stream:
                    del self._in_flight[event.stream_id]
                    request.done.set()
            elif isinstance(event, trioquic.StreamResetReceived):
                request = self._in_flight.pop(event.stream_id, None)
                if request is not None:
                    request.fail(
                        trioquic.StreamReset(event.stream_id, event.error_code)
                    )

    def process_writes(self, io: trioquic.ConnectionIO) -> None:
        while self._ready:
            stream_id = io.open_stream()
            if stream_id is None:
                return  # the server's stream limit: retry at the next step
            request = self._ready.pop(0)
            io.send_stream_data(stream_id, request.data, end_stream=True)
            self._in_flight[stream_id] = request

    def on_connection_close(
        self, io: trioquic.ConnectionIO, reason: trioquic.CloseReason
    ) -> None:
        error: BaseException = io.error or trioquic.ConnectionClosed(reason)
        self._error = error
        pending = [*self._ready, *self._in_flight.values()]
        while True:  # requests still in the channel: bounded by its size
            try:
                pending.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        for request in pending:
            request.fail(error)
        self._ready.clear()
        self._in_flight.clear()


# -- running it -------------------------------------------------------------------

DEMO = [
    "SET colour blue",
    "SET shape circle",
    "GET colour",
    "DEL shape",
    "GET shape",
    "FLY away",
]


async def run_client(
    host: str, port: int, ca_certs: str, requests: Sequence[str]
) -> list[tuple[str, str]]:
    settings = trioquic.QuicSettings(alpn_protocols=[ALPN], ca_certs=ca_certs)
    results: list[tuple[str, str]] = []
    async with trioquic.open_application(
        KeyValueClient(), host, port, settings=settings
    ) as kv:
        # One at a time, so that each sees the effect of the one before...
        for line in requests:
            results.append((line, await kv.request(line)))
        # ...and a burst in parallel: one stream each, on the same connection.
        keys = [f"k{i}" for i in range(10)]
        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(kv.request, f"SET {key} {key.upper()}")
        values = [await kv.request(f"GET {key}") for key in keys]
        results.append(("GET k0..k9 after 10 parallel SETs", " ".join(values)))
    return results


def server_settings(cert: trioquic.DevelopmentCertificate) -> trioquic.QuicSettings:
    return trioquic.QuicSettings(
        alpn_protocols=[ALPN],
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
    )


async def serve(host: str, port: int, store: dict[str, str]) -> None:
    """Server only, until Ctrl-C."""
    cert = trioquic.generate_self_signed_certificate()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioquic.serve_application,
                    lambda: KeyValueServer(store),
                    port,
                    host=host,
                    settings=server_settings(cert),
                )
            )
            print(f"listening on {host}:{server.port}")
            print(f"certificate: {cert.certificate_path}")
            print(
                "run: python examples/custom_protocol.py --client "
                f"--host {host} --port {server.port} "
                f"--ca-certs {cert.certificate_path} SET colour blue, GET colour"
            )
            print("press Ctrl-C to stop", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    print("stopped", flush=True)


async def both(host: str, requests: Sequence[str]) -> None:
    """Server and client in one process, on a free port."""
    cert = trioquic.generate_self_signed_certificate()
    store: dict[str, str] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioquic.serve_application,
                    lambda: KeyValueServer(store),
                    0,
                    host=host,
                    settings=server_settings(cert),
                )
            )
            results = await run_client(
                host, server.port, str(cert.certificate_path), requests
            )
            nursery.cancel_scope.cancel()
    print_results(results)
    print(f"server store: {dict(sorted(store.items()))}")


def print_results(results: Sequence[tuple[str, str]]) -> None:
    for line, reply in results:
        print(f"{line} -> {reply}")


def parse_requests(words: Sequence[str]) -> list[str]:
    """``SET a 1, GET a`` -> ``["SET a 1", "GET a"]``."""
    text = " ".join(words)
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="trioquic custom protocol example")
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--server", action="store_true", help="run only the server")
    side.add_argument("--client", action="store_true", help="run only the client")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4434)
    parser.add_argument("--ca-certs", help="the server's cert.pem (with --client)")
    parser.add_argument("request", nargs="*", help="requests, separated by commas")
    args = parser.parse_args(argv)
    requests = parse_requests(args.request) or DEMO
    if args.server:
        trio.run(serve, args.host, args.port, {})
    elif args.client:
        if args.ca_certs is None:
            parser.error("--client needs --ca-certs (the server prints the path)")

        async def client() -> list[tuple[str, str]]:
            with trio.fail_after(30):
                return await run_client(args.host, args.port, args.ca_certs, requests)

        try:
            print_results(trio.run(client))
        except trioquic.ConnectionClosed as exc:
            sys.exit(f"custom_protocol: connection failed: {exc.reason}")
    else:
        trio.run(both, args.host, requests)


if __name__ == "__main__":
    main()
