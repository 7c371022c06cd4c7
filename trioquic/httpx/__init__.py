"""httpx over HTTP/3: :class:`HTTP3Transport` for ``httpx.AsyncClient`` under
trio, and :class:`AltSvcTransport`, which starts on TCP and moves an origin
to HTTP/3 once it advertised it (``Alt-Svc``), as browsers do.

Needs the ``httpx`` extra (``pip install trioquic[httpx]``); import it
explicitly (``from trioquic.httpx import HTTP3Transport``). See docs/httpx.rst.
"""

from .._util import fixup_module_metadata as _fixup
from ._alt_svc import AltService as AltService
from ._alt_svc import AltSvcTransport as AltSvcTransport
from ._alt_svc import parse_alt_svc as parse_alt_svc
from ._transport import HTTP3Transport as HTTP3Transport
from ._transport import ResponseStream as ResponseStream

_fixup(__name__, globals())
del _fixup
