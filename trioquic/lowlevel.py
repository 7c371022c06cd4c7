"""Building blocks for endpoints of your own: the router and its pure routing
table, the IoWorker, datagram sockets, and the engine interface that every
QUIC engine implements.

Applications rarely need these: :func:`trioquic.serve_quic`,
:func:`trioquic.open_quic_connection` and :mod:`trioquic.h3` assemble them.
Each is constructible from public types: an engine comes from
:func:`create_endpoint_engine`, a table from its keyword arguments, a socket
from :func:`bind_udp_sockets` (or any :class:`DatagramSocket`).
"""

from ._engine import DataReceived as DataReceived
from ._engine import EndpointEngine as EndpointEngine
from ._engine import GoawayReceived as GoawayReceived
from ._engine import H3ConnectionError as H3ConnectionError
from ._engine import H3DatagramReceived as H3DatagramReceived
from ._engine import H3Engine as H3Engine
from ._engine import H3Event as H3Event
from ._engine import HeadersReceived as HeadersReceived
from ._engine import QuicEngine as QuicEngine
from ._engine import RequestStopSending as RequestStopSending
from ._engine import RequestStreamReset as RequestStreamReset
from ._engine import create_endpoint_engine as create_endpoint_engine
from ._retry import RetryTokens as RetryTokens
from ._router import InboundPacketRouter as InboundPacketRouter
from ._router import RouterCounters as RouterCounters
from ._routing import Accept as Accept
from ._routing import Deliver as Deliver
from ._routing import Drop as Drop
from ._routing import RefuseConnection as RefuseConnection
from ._routing import RejectToken as RejectToken
from ._routing import RoutingTable as RoutingTable
from ._routing import SendRetry as SendRetry
from ._routing import SendStatelessReset as SendStatelessReset
from ._routing import SendVersionNegotiation as SendVersionNegotiation
from ._stateless_reset import StatelessResetKey as StatelessResetKey
from ._udp import DatagramSocket as DatagramSocket
from ._udp import UdpSocket as UdpSocket
from ._udp import bind_udp_sockets as bind_udp_sockets
from ._util import fixup_module_metadata as _fixup
from ._worker import IoWorker as IoWorker

_fixup(__name__, globals())
del _fixup
