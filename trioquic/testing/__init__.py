"""Test QUIC code without touching the network: an in-memory UDP network for
trio, and helpers to run servers and clients on it.

Import it explicitly (``import trioquic.testing``). Everything here runs under
``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock`` fixture): delays, timeouts and retransmissions take no
real time, and a seeded network makes a lossy run reproducible.

A test of a protocol over trioquic::

    from trioquic.testing import LinkConditions, MemoryNetwork, open_memory_server

    async def echo(connection):
        stream = await connection.accept_stream()
        async for data in stream:
            await stream.send_all(data)

    async def test_echo_over_a_bad_network(autojump_clock):
        network = MemoryNetwork(
            seed=3, conditions=LinkConditions(delay=0.05, loss=0.1, jitter=0.01)
        )
        async with open_memory_server(echo, network=network) as server:
            async with server.connect() as connection:
                stream = await connection.open_stream()
                await stream.send_all(b"ping")
                assert await stream.receive_some() == b"ping"

:class:`MemoryNetwork` hands out :class:`MemorySocket` objects, which
:func:`trioquic.serve_quic` (``sockets=[...]``) and
:func:`trioquic.open_quic_connection` (``socket=...``) accept in place of UDP
sockets; :class:`LinkConditions` describes what each link does to datagrams
(delay, jitter, loss, duplication, corruption, queue bound, bandwidth; loss
that changes with time: :class:`Blackout`, :class:`LossBursts`,
:class:`LossRamp`, :class:`PeriodicLoss`), and :meth:`MemoryNetwork.rebind`
(or ``MemoryNetwork(rebinds=[...])``) simulates a NAT rebinding.
:meth:`MemoryNetwork.replay_code` is the line of Python that rebuilds a
network.

For property tests, :mod:`trioquic.testing.strategies` draws networks that
misbehave (they shrink towards a perfect one); :func:`open_memory_http3` and
:func:`open_memory_httpx` serve an HTTP/3 handler or an ASGI application on
the network with a client connected; and a pytest plugin (loaded when
trioquic is installed) gives the ``quic_network`` and ``quic_certificate``
fixtures, the ``quic_lossy`` marker and a replay line for the network of a
failing test. See the testing tutorial.
"""

from .._util import fixup_module_metadata as _fixup
from ._http3 import open_memory_http3 as open_memory_http3
from ._http3 import open_memory_httpx as open_memory_httpx
from ._network import EPHEMERAL_PORT_START as EPHEMERAL_PORT_START
from ._network import Blackout as Blackout
from ._network import LinkConditions as LinkConditions
from ._network import LinkStatistics as LinkStatistics
from ._network import LossBursts as LossBursts
from ._network import LossRamp as LossRamp
from ._network import LossSchedule as LossSchedule
from ._network import MemoryNetwork as MemoryNetwork
from ._network import MemorySocket as MemorySocket
from ._network import NetworkStatistics as NetworkStatistics
from ._network import PeriodicLoss as PeriodicLoss
from ._server import TEST_ALPN as TEST_ALPN
from ._server import TEST_SERVER_NAME as TEST_SERVER_NAME
from ._server import MemoryServer as MemoryServer
from ._server import client_settings as client_settings
from ._server import development_certificate as development_certificate
from ._server import open_memory_server as open_memory_server
from ._server import server_settings as server_settings

_fixup(__name__, globals())
del _fixup
