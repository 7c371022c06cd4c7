"""DNS over QUIC server settings, as one frozen, validated value."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from .._validators import flag, int_at_least, seconds
from ._wire import HEADER_SIZE, MAX_MESSAGE_SIZE

#: What the server does with a non-replayable query received in 0-RTT data.
EarlyDataPolicy = Literal["refuse", "defer", "close"]
_EARLY_DATA_POLICIES = ("refuse", "defer", "close")


def _early_data(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in _EARLY_DATA_POLICIES:
        raise ValueError(
            f"DoqSettings.early_data must be one of {', '.join(_EARLY_DATA_POLICIES)}"
            f", got {value!r}"
        )


def _query_size(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    int_at_least(HEADER_SIZE)(instance, attribute, value)
    if value > MAX_MESSAGE_SIZE:
        raise ValueError(
            f"DoqSettings.max_query_size must be at most {MAX_MESSAGE_SIZE} (the "
            f"2-byte length prefix), got {value}"
        )


def _grace(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            "DoqSettings.shutdown_grace must be a number of seconds, "
            f"got {type(value).__name__}"
        )
    if not value >= 0:
        raise ValueError(f"DoqSettings.shutdown_grace must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class DoqSettings:
    """Settings of a DNS over QUIC server (:func:`~trioquic.doq.serve_doq`);
    the QUIC side (certificate, idle timeout, connection limits) is a
    :class:`~trioquic.QuicSettings`. Every field is validated when the object
    is built: a wrong value raises :exc:`TypeError` or :exc:`ValueError`
    naming the field."""

    #: Queries one connection may have open at once. It is the QUIC stream
    #: limit the server grants (``initial_max_streams_bidi``): a client
    #: waits for credit (MAX_STREAMS) before it opens more, and the server
    #: never holds more than this many queries of one connection.
    max_concurrent_queries: int = attrs.field(default=100, validator=int_at_least(1))
    #: Largest query accepted, in bytes (12..65535). A longer one (as its
    #: length prefix announces) is refused on its stream: STOP_SENDING and
    #: RESET_STREAM with DOQ_EXCESSIVE_LOAD; the connection goes on.
    max_query_size: int = attrs.field(default=16384, validator=_query_size)
    #: Seconds a handler may take; then the client gets SERVFAIL.
    handler_timeout: float = attrs.field(default=5.0, validator=seconds())
    #: Seconds from a stream's first byte to the end of its query (the FIN).
    #: A stream still incomplete then is a "dangling" stream (RFC 9250
    #: section 4.2): the connection is closed with DOQ_PROTOCOL_ERROR.
    query_timeout: float = attrs.field(default=10.0, validator=seconds())
    #: A non-replayable query (an opcode other than QUERY and NOTIFY)
    #: received in 0-RTT data (RFC 9250 section 4.5): ``"refuse"`` answers
    #: REFUSED with the Extended DNS Error "Too Early" (26), ``"defer"``
    #: runs it once the handshake has completed, ``"close"`` closes the
    #: connection with DOQ_PROTOCOL_ERROR.
    early_data: EarlyDataPolicy = attrs.field(default="refuse", validator=_early_data)
    #: Pad responses to a multiple of 468 bytes (EDNS(0) Padding, RFC 7830
    #: and RFC 8467) when the query carried a Padding option (RFC 9250
    #: section 5.4).
    pad_responses: bool = attrs.field(default=True, validator=flag)
    #: Seconds a cancelled server waits for the queries in progress to be
    #: answered before it closes every connection (CONNECTION_CLOSE with
    #: DOQ_NO_ERROR).
    shutdown_grace: float = attrs.field(default=2.0, validator=_grace)
