"""Type aliases of the ASGI 3 interface (the shapes asgiref's ``typing``
module spells out, kept loose enough for every framework's own aliases)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

#: The connection scope an application is called with.
Scope = MutableMapping[str, Any]
#: One event, received from or sent to the server.
Message = MutableMapping[str, Any]
#: Awaitable returning the next event from the server.
Receive = Callable[[], Awaitable[Message]]
#: Awaitable sending one event to the server.
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application: ``await app(scope, receive, send)``.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
