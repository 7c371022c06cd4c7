"""trioquic: QUIC and HTTP/3 for trio, over aioquic's sans-io state machine."""

from ._application import ApplicationOverQuic as ApplicationOverQuic
from ._application import ConnectionIO as ConnectionIO
from ._certs import DevelopmentCertificate as DevelopmentCertificate
from ._certs import generate_self_signed_certificate as generate_self_signed_certificate
from ._connection import QuicConnection as QuicConnection
from ._endpoint import QuicServer as QuicServer
from ._endpoint import open_application as open_application
from ._endpoint import open_quic_connection as open_quic_connection
from ._endpoint import serve_application as serve_application
from ._endpoint import serve_quic as serve_quic
from ._engine import ConnectionStatistics as ConnectionStatistics
from ._engine import HandshakeInfo as HandshakeInfo
from ._errors import CloseReason as CloseReason
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import DatagramError as DatagramError
from ._errors import HandshakeTimeout as HandshakeTimeout
from ._errors import IdleTimeout as IdleTimeout
from ._errors import QuicError as QuicError
from ._errors import StatelessReset as StatelessReset
from ._errors import StreamReset as StreamReset
from ._errors import StreamStopped as StreamStopped
from ._events import DatagramReceived as DatagramReceived
from ._events import QuicEvent as QuicEvent
from ._events import StopSendingReceived as StopSendingReceived
from ._events import StreamDataReceived as StreamDataReceived
from ._events import StreamResetReceived as StreamResetReceived
from ._router import InboundPacketRouter as InboundPacketRouter
from ._router import RouterStatistics as RouterStatistics
from ._routing import DropReason as DropReason
from ._routing import RoutingTable as RoutingTable
from ._settings import QuicSettings as QuicSettings
from ._stream import QuicReceiveStream as QuicReceiveStream
from ._stream import QuicSendStream as QuicSendStream
from ._stream import QuicStream as QuicStream
from ._udp import DatagramSocket as DatagramSocket
from ._worker import IoWorker as IoWorker

__version__ = "0.1.0"
