"""Session tickets as opaque bytes (the aioquic engine's format: a ticket
from one engine resumes on the other), and a server's single-use ticket
store."""

from __future__ import annotations

import base64
import datetime
import json
from collections import OrderedDict

from qh3 import tls

#: Session tickets a server remembers (each is used once, then forgotten).
_TICKET_STORE_SIZE = 4096


def encode_session_ticket(ticket: tls.SessionTicket) -> bytes:
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


def decode_session_ticket(data: bytes) -> tls.SessionTicket:
    """The inverse of :func:`encode_session_ticket`; ValueError if malformed."""
    try:
        fields = json.loads(data)
        if fields.get("version") != 1:
            raise ValueError("unknown session ticket format")
        return tls.SessionTicket(
            age_add=int(fields["age_add"]),
            cipher_suite=tls.CipherSuite(int(fields["cipher_suite"])),
            not_valid_after=datetime.datetime.fromisoformat(fields["not_valid_after"]),
            not_valid_before=datetime.datetime.fromisoformat(
                fields["not_valid_before"]
            ),
            resumption_secret=base64.b64decode(fields["resumption_secret"]),
            server_name=str(fields["server_name"]),
            ticket=base64.b64decode(fields["ticket"]),
            max_early_data_size=fields["max_early_data_size"],
            other_extensions=[
                (int(t), base64.b64decode(d)) for t, d in fields["other_extensions"]
            ],
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a trioquic session ticket: {exc}") from None


class TicketStore:
    """A server's issued tickets, by label, each usable once (which also makes
    0-RTT data unreplayable across connections to this endpoint) and for
    ``lifetime`` seconds, the oldest forgotten past ``size``.

    Times are the engine's clock: the engine sets :attr:`now` before each
    call into qh3 that can store or fetch a ticket."""

    def __init__(
        self, size: int = _TICKET_STORE_SIZE, lifetime: float = 86400.0
    ) -> None:
        self._size = size
        self._lifetime = lifetime
        #: The engine's current time.
        self.now = 0.0
        # label -> (ticket, time it expires)
        self._tickets: OrderedDict[bytes, tuple[tls.SessionTicket, float]] = (
            OrderedDict()
        )

    def store(self, ticket: tls.SessionTicket) -> None:
        self._tickets[ticket.ticket] = (ticket, self.now + self._lifetime)
        while len(self._tickets) > self._size:
            self._tickets.popitem(last=False)

    def fetch(self, label: bytes) -> tls.SessionTicket | None:
        entry = self._tickets.pop(label, None)
        if entry is None or self.now > entry[1]:
            return None
        return entry[0]
