"""ASGI 3 applications (Starlette, FastAPI, Quart-trio, ...) served over
trioquic's HTTP/3 (and the TCP front door): :func:`serve_asgi` runs one
with its lifespan, :class:`ASGIAdapter` is the request handler underneath,
:func:`load_app` finds one from ``"module:attr"``. See docs/asgi.rst."""

from .._util import fixup_module_metadata as _fixup
from ._adapter import ASGIAdapter as ASGIAdapter
from ._adapter import ClientDisconnected as ClientDisconnected
from ._asyncio import AsyncioApp as AsyncioApp
from ._lifespan import Lifespan as Lifespan
from ._lifespan import LifespanFailure as LifespanFailure
from ._lifespan import LifespanMode as LifespanMode
from ._loader import load_app as load_app
from ._serve import serve_asgi as serve_asgi
from ._types import ASGIApp as ASGIApp
from ._types import Message as Message
from ._types import Receive as Receive
from ._types import Scope as Scope
from ._types import Send as Send

_fixup(__name__, globals())
del _fixup
