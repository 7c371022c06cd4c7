"""HTTP/3 for trio: :func:`serve_http3`, :func:`open_http3_client`, and the
:class:`H3Driver` they run on every connection (an
:class:`~trioquic.ApplicationOverQuic` over the QUIC engine's HTTP/3 state
machine). See docs/http3.rst."""

from .._util import fixup_module_metadata as _fixup
from ._capsules import Capsule as Capsule
from ._capsules import CapsuleDecoder as CapsuleDecoder
from ._capsules import CapsuleError as CapsuleError
from ._capsules import CapsuleReader as CapsuleReader
from ._capsules import CapsuleType as CapsuleType
from ._capsules import encode_capsule as encode_capsule
from ._client import ClientH3Driver as ClientH3Driver
from ._client import Http3Client as Http3Client
from ._client import Push as Push
from ._client import RequestStream as RequestStream
from ._client import Response as Response
from ._driver import H3Driver as H3Driver
from ._endpoint import open_http3_client as open_http3_client
from ._endpoint import serve_http3 as serve_http3
from ._errors import ConnectionGoingAway as ConnectionGoingAway
from ._errors import H3Error as H3Error
from ._errors import H3ErrorCode as H3ErrorCode
from ._errors import RequestRejected as RequestRejected
from ._headers import HeaderInput as HeaderInput
from ._headers import Headers as Headers
from ._server import Request as Request
from ._server import RequestHandler as RequestHandler
from ._server import ResponseWriter as ResponseWriter
from ._server import ServerH3Driver as ServerH3Driver
from ._settings import Http3Settings as Http3Settings

_fixup(__name__, globals())
del _fixup
