"""HTTP/3 for trio: :func:`serve_http3`, :func:`open_http3_client`, and the
:class:`H3Driver` they run on every connection (an
:class:`~trioquic.ApplicationOverQuic` over aioquic's HTTP/3 state machine).
See docs/http3.rst."""

from ._driver import ClientH3Driver as ClientH3Driver
from ._driver import H3Driver as H3Driver
from ._driver import ServerH3Driver as ServerH3Driver
from ._endpoint import open_http3_client as open_http3_client
from ._endpoint import serve_http3 as serve_http3
from ._engine import H3_CLOSED_CRITICAL_STREAM as H3_CLOSED_CRITICAL_STREAM
from ._engine import H3_CONNECT_ERROR as H3_CONNECT_ERROR
from ._engine import H3_DATAGRAM_ERROR as H3_DATAGRAM_ERROR
from ._engine import H3_EXCESSIVE_LOAD as H3_EXCESSIVE_LOAD
from ._engine import H3_FRAME_ERROR as H3_FRAME_ERROR
from ._engine import H3_FRAME_UNEXPECTED as H3_FRAME_UNEXPECTED
from ._engine import H3_GENERAL_PROTOCOL_ERROR as H3_GENERAL_PROTOCOL_ERROR
from ._engine import H3_ID_ERROR as H3_ID_ERROR
from ._engine import H3_INTERNAL_ERROR as H3_INTERNAL_ERROR
from ._engine import H3_MESSAGE_ERROR as H3_MESSAGE_ERROR
from ._engine import H3_MISSING_SETTINGS as H3_MISSING_SETTINGS
from ._engine import H3_NO_ERROR as H3_NO_ERROR
from ._engine import H3_REQUEST_CANCELLED as H3_REQUEST_CANCELLED
from ._engine import H3_REQUEST_INCOMPLETE as H3_REQUEST_INCOMPLETE
from ._engine import H3_REQUEST_REJECTED as H3_REQUEST_REJECTED
from ._engine import H3_SETTINGS_ERROR as H3_SETTINGS_ERROR
from ._engine import H3_STREAM_CREATION_ERROR as H3_STREAM_CREATION_ERROR
from ._engine import H3_VERSION_FALLBACK as H3_VERSION_FALLBACK
from ._engine import Headers as Headers
from ._errors import ConnectionGoingAway as ConnectionGoingAway
from ._errors import H3Error as H3Error
from ._errors import RequestRejected as RequestRejected
from ._messages import Http3Client as Http3Client
from ._messages import Request as Request
from ._messages import RequestStream as RequestStream
from ._messages import Response as Response
from ._messages import ResponseWriter as ResponseWriter
from ._settings import Http3Settings as Http3Settings
