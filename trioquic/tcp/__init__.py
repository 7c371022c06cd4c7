"""The TCP front door: HTTP/1.1 (h11) and HTTP/2 (h2) over TLS or plain TCP,
serving the same :data:`~trioquic.HttpHandler` as HTTP/3, and ``Alt-Svc``
to lead clients to HTTP/3. See docs/deployment.rst."""

from .._util import fixup_module_metadata as _fixup
from ._alt_svc import alt_svc_value as alt_svc_value
from ._request import ResponseWriter as ResponseWriter
from ._request import TcpRequest as TcpRequest
from ._server import TcpServer as TcpServer
from ._server import serve_tcp as serve_tcp
from ._settings import TcpSettings as TcpSettings

# serve_tcp, TcpServer and TcpSettings are shown as trioquic's (where
# applications import them from); the rest as trioquic.tcp's.
_fixup(
    __name__,
    {
        "alt_svc_value": alt_svc_value,
        "TcpRequest": TcpRequest,
        "ResponseWriter": ResponseWriter,
    },
)
del _fixup
