"""The IoWorker's own failure paths: a bug in an application's hook (or the
engine) ends that connection with CONNECTION_CLOSE, recorded as
CloseCause.INTERNAL_ERROR, and no other connection notices."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import trio
import trio.testing

import trioquic
from trioquic.testing import MemoryNetwork, client_settings, server_settings

SERVER = ("10.0.0.1", 4433)


class Crashing(trioquic.ApplicationOverQuic):
    """Echoes streams, except that data starting with b"crash" raises in
    process_reads (a bug in the application)."""

    def attach(self, io: trioquic.ConnectionIO) -> None:
        self.io = io

    def process_reads(
        self, io: trioquic.ConnectionIO, events: Sequence[trioquic.QuicEvent]
    ) -> None:
        for event in events:
            if isinstance(event, trioquic.StreamDataReceived):
                if event.data.startswith(b"crash"):
                    raise RuntimeError("a bug in the application")
                io.send_stream_data(event.stream_id, event.data, event.end_stream)


async def test_a_failing_hook_closes_only_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=5)
    server_socket = network.socket(*SERVER)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioquic.serve_application,
                    Crashing,
                    SERVER[1],
                    settings=server_settings(idle_timeout=20.0),
                    sockets=[server_socket],
                )
            )
            settings = client_settings(idle_timeout=20.0)
            async with (
                trioquic.open_quic_connection(
                    *SERVER, settings=settings, socket=network.socket("10.0.0.2")
                ) as healthy,
                trioquic.open_quic_connection(
                    *SERVER, settings=settings, socket=network.socket("10.0.0.3")
                ) as doomed,
            ):
                start = trio.current_time()
                stream = await doomed.open_stream()
                await stream.send_all(b"crash now")
                error = await doomed.wait_closed()
                # Told at once with CONNECTION_CLOSE, not by the idle timeout.
                assert trio.current_time() - start < 1.0
                assert error.reason.cause is trioquic.CloseCause.CLOSED_BY_PEER
                assert error.reason.error_code == 0x1  # INTERNAL_ERROR
                assert error.reason.is_transport
                # The other connection carries on.
                echo = await healthy.open_stream()
                await echo.send_all(b"still here")
                assert await echo.receive_some() == b"still here"
                assert server.connection_count == 1
                (survivor,) = server.connections
                assert survivor.error is None
            nursery.cancel_scope.cancel()
