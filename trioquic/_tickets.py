"""Session tickets as opaque bytes, and a server's single-use ticket store,
for any engine whose TLS session ticket has aioquic's fields (aioquic's and
qh3's do): each engine's ``_tickets`` module binds these to its own
``tls.SessionTicket``, so a ticket from one engine resumes on the other."""

from __future__ import annotations

import base64
import datetime
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

#: Session tickets a server remembers (each is used once, then forgotten).
_TICKET_STORE_SIZE = 4096


class SessionTicketLike(Protocol):
    """The fields of a TLS session ticket, as aioquic and qh3 have them."""

    @property
    def age_add(self) -> int: ...
    @property
    def cipher_suite(self) -> int: ...
    @property
    def not_valid_after(self) -> datetime.datetime: ...
    @property
    def not_valid_before(self) -> datetime.datetime: ...
    @property
    def resumption_secret(self) -> bytes: ...
    @property
    def server_name(self) -> str: ...
    @property
    def ticket(self) -> bytes: ...
    @property
    def max_early_data_size(self) -> int | None: ...
    @property
    def other_extensions(self) -> Sequence[tuple[int, bytes]]: ...


T = TypeVar("T", bound=SessionTicketLike)


def encode_session_ticket(ticket: SessionTicketLike) -> bytes:
    """A TLS session ticket as opaque, self-contained bytes (JSON inside)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return json.dumps(
        {
            "version": 1,
            "age_add": ticket.age_add,
            "cipher_suite": int(ticket.cipher_suite),
            "not_valid_after": ticket.not_valid_after.isoformat(),
            "not_valid_before": ticket.not_valid_before.isoformat(),
            "resumption_secret": b64(ticket.resumption_secret),
            "server_name": ticket.server_name,
            "ticket": b64(ticket.ticket),
            "max_early_data_size": ticket.max_early_data_size,
            "other_extensions": [[t, b64(d)] for t, d in ticket.other_extensions],
        }
    ).encode()


def session_ticket_fields(data: bytes) -> dict[str, Any]:
    """The inverse of :func:`encode_session_ticket`, as the keyword arguments
    of a ``SessionTicket`` (``cipher_suite`` as an int, for the engine to
    turn into its enum); ValueError if malformed."""
    try:
        fields = json.loads(data)
        if fields.get("version") != 1:
            raise ValueError("unknown session ticket format")
        return {
            "age_add": int(fields["age_add"]),
            "cipher_suite": int(fields["cipher_suite"]),
            "not_valid_after": datetime.datetime.fromisoformat(
                fields["not_valid_after"]
            ),
            "not_valid_before": datetime.datetime.fromisoformat(
                fields["not_valid_before"]
            ),
            "resumption_secret": base64.b64decode(fields["resumption_secret"]),
            "server_name": str(fields["server_name"]),
            "ticket": base64.b64decode(fields["ticket"]),
            "max_early_data_size": fields["max_early_data_size"],
            "other_extensions": [
                (int(t), base64.b64decode(d)) for t, d in fields["other_extensions"]
            ],
        }
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a trioquic session ticket: {exc}") from None


class TicketStore(Generic[T]):
    """A server's issued tickets, by label, each usable once (which also makes
    0-RTT data unreplayable across connections to this endpoint) and for
    ``lifetime`` seconds, the oldest forgotten past ``size``.

    Times are the engine's clock: the engine sets :attr:`now` before each
    call into its TLS that can store or fetch a ticket."""

    def __init__(
        self, size: int = _TICKET_STORE_SIZE, lifetime: float = 86400.0
    ) -> None:
        self._size = size
        self._lifetime = lifetime
        #: The engine's current time.
        self.now = 0.0
        # label -> (ticket, time it expires)
        self._tickets: OrderedDict[bytes, tuple[T, float]] = OrderedDict()

    def store(self, ticket: T) -> None:
        self._tickets[ticket.ticket] = (ticket, self.now + self._lifetime)
        while len(self._tickets) > self._size:
            self._tickets.popitem(last=False)

    def fetch(self, label: bytes) -> T | None:
        entry = self._tickets.pop(label, None)
        if entry is None or self.now > entry[1]:
            return None
        return entry[0]
