"""DNS over QUIC (RFC 9250): a server answering through a handler that takes
and returns dnspython messages (:func:`serve_doq`), a handler that forwards
to a classic DNS server (:class:`UdpForwarder`), and a small client
(:func:`query`). Needs dnspython (the ``doq`` extra)."""

from .._util import fixup_module_metadata as _fixup
from ._client import query as query
from ._client import query_over as query_over
from ._errors import DoqErrorCode as DoqErrorCode
from ._errors import DoqProtocolError as DoqProtocolError
from ._forwarder import UdpForwarder as UdpForwarder
from ._forwarder import UpstreamError as UpstreamError
from ._server import DoqHandler as DoqHandler
from ._server import DoqServer as DoqServer
from ._server import DoqStatistics as DoqStatistics
from ._server import QueryContext as QueryContext
from ._server import serve_doq as serve_doq
from ._settings import DoqSettings as DoqSettings
from ._settings import EarlyDataPolicy as EarlyDataPolicy
from ._wire import DEFAULT_PORT as DEFAULT_PORT
from ._wire import DOQ_ALPN as DOQ_ALPN

_fixup(__name__, globals())
del _fixup
