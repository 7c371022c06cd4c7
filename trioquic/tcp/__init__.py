"""The TCP front door: HTTP/1.1 (h11) and HTTP/2 (h2) over TLS or plain TCP,
serving the same :data:`~trioquic.HttpHandler` as HTTP/3, and ``Alt-Svc``
to lead clients to HTTP/3. See docs/deployment.rst.

The server and its settings are :func:`trioquic.serve_tcp`,
:class:`trioquic.TcpServer` and :class:`trioquic.TcpSettings` (and
:func:`trioquic.serve_http` runs the door beside HTTP/3); this module holds
the door's own types."""

from .._util import fixup_module_metadata as _fixup
from ._alt_svc import alt_svc_value as alt_svc_value
from ._request import TcpRequest as TcpRequest
from ._request import TcpResponseWriter as TcpResponseWriter

_fixup(__name__, globals())
del _fixup
