"""Session tickets of the aioquic engine: :mod:`trioquic._tickets` bound to
aioquic's ``tls.SessionTicket`` (the same bytes on either engine: a ticket from
one resumes on the other)."""

from __future__ import annotations

from aioquic import tls

from .._tickets import TicketStore as _TicketStore
from .._tickets import encode_session_ticket as encode_session_ticket
from .._tickets import session_ticket_fields

#: A server's single-use store of aioquic's tickets.
TicketStore = _TicketStore[tls.SessionTicket]


def decode_session_ticket(data: bytes) -> tls.SessionTicket:
    """The inverse of :func:`encode_session_ticket`; ValueError if malformed."""
    fields = session_ticket_fields(data)
    return tls.SessionTicket(
        cipher_suite=tls.CipherSuite(fields.pop("cipher_suite")), **fields
    )
