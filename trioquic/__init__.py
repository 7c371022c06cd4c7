"""trioquic: QUIC and HTTP/3 for trio, with structured concurrency all the way
down.

What applications use is here; HTTP/3 is :mod:`trioquic.h3`, the in-memory
test network :mod:`trioquic.testing`, and the building blocks of custom
endpoints (the router, the worker, the engine interface)
:mod:`trioquic.lowlevel`.
"""

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
from ._errors import CloseCause as CloseCause
from ._errors import CloseReason as CloseReason
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import ConnectionRefused as ConnectionRefused
from ._errors import DatagramError as DatagramError
from ._errors import HandshakeTimeout as HandshakeTimeout
from ._errors import IdleTimeout as IdleTimeout
from ._errors import PeerUnreachable as PeerUnreachable
from ._errors import QuicError as QuicError
from ._errors import StatelessReset as StatelessReset
from ._errors import StreamReset as StreamReset
from ._errors import StreamStateError as StreamStateError
from ._errors import StreamStopped as StreamStopped
from ._events import DatagramReceived as DatagramReceived
from ._events import HandshakeInfo as HandshakeInfo
from ._events import QuicEvent as QuicEvent
from ._events import StopSendingReceived as StopSendingReceived
from ._events import StreamDataReceived as StreamDataReceived
from ._events import StreamResetReceived as StreamResetReceived
from ._http import HTTP_DISCONNECTED as HTTP_DISCONNECTED
from ._http import HttpHandler as HttpHandler
from ._http import HttpRequest as HttpRequest
from ._http import HttpResponseWriter as HttpResponseWriter
from ._quic_lb import QuicLbConfig as QuicLbConfig
from ._serve_http import HttpServer as HttpServer
from ._serve_http import serve_http as serve_http
from ._settings import QuicSettings as QuicSettings
from ._statistics import ConnectionStatistics as ConnectionStatistics
from ._statistics import DropReason as DropReason
from ._statistics import RouterStatistics as RouterStatistics
from ._statistics import StreamStatistics as StreamStatistics
from ._stream import QuicReceiveStream as QuicReceiveStream
from ._stream import QuicSendStream as QuicSendStream
from ._stream import QuicStream as QuicStream
from ._util import fixup_module_metadata as _fixup
from .tcp._server import TcpServer as TcpServer
from .tcp._server import serve_tcp as serve_tcp
from .tcp._settings import TcpSettings as TcpSettings

__version__ = "0.2.0"

_fixup(__name__, globals())
del _fixup
