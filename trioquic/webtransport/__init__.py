"""WebTransport over HTTP/3 (draft-ietf-webtrans-http3-02, what Chromium
speaks): sessions with bidirectional and unidirectional streams (trio
streams) and datagrams. Server: :func:`serve_webtransport`, or
:func:`accept` in a :func:`trioquic.h3.serve_http3` handler; client:
:func:`open_webtransport_session`, :func:`connect_webtransport`. See
docs/webtransport.rst."""

from .._util import fixup_module_metadata as _fixup
from ._client import connect_webtransport as connect_webtransport
from ._client import open_webtransport_session as open_webtransport_session
from ._errors import WT_BUFFERED_STREAM_REJECTED as WT_BUFFERED_STREAM_REJECTED
from ._errors import WT_SESSION_GONE as WT_SESSION_GONE
from ._errors import SessionClosed as SessionClosed
from ._errors import SessionCloseInfo as SessionCloseInfo
from ._errors import SessionRejected as SessionRejected
from ._errors import StreamResetError as StreamResetError
from ._errors import StreamStoppedError as StreamStoppedError
from ._errors import WebTransportError as WebTransportError
from ._errors import http3_code_to_webtransport as http3_code_to_webtransport
from ._errors import webtransport_code_to_http3 as webtransport_code_to_http3
from ._server import SessionHandler as SessionHandler
from ._server import accept as accept
from ._server import is_webtransport_request as is_webtransport_request
from ._server import serve_webtransport as serve_webtransport
from ._server import webtransport_settings as webtransport_settings
from ._session import WebTransportSession as WebTransportSession
from ._stream import WebTransportReceiveStream as WebTransportReceiveStream
from ._stream import WebTransportSendStream as WebTransportSendStream
from ._stream import WebTransportStream as WebTransportStream

_fixup(__name__, globals())
del _fixup
