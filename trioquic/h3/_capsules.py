"""The Capsule Protocol (RFC 9297 section 3): type-length-value records on
the data stream of an upgraded request (extended CONNECT: MASQUE,
WebTransport).

:class:`CapsuleDecoder` is the sans-io parser: bytes in, capsules out,
bounded. :class:`CapsuleReader` drives it from an async byte source (an
HTTP/3 request's or response's :meth:`~trioquic.h3.Request.receive_chunk`,
or any trio stream's ``receive_some``). Writing is :func:`encode_capsule`
and the stream's ``send``.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection

import attrs
import trio

from .._varint import VARINT_LIMIT, decode_varint, encode_varint
from ._errors import H3Error, H3ErrorCode

__all__ = [
    "Capsule",
    "CapsuleDecoder",
    "CapsuleError",
    "CapsuleReader",
    "CapsuleType",
    "decode_varint",
    "encode_capsule",
    "encode_varint",
]

#: The largest capsule value a decoder keeps by default: an HTTP datagram
#: that fits a QUIC packet, with room to spare. Capsules of types the
#: decoder skips are never buffered, whatever their length.
DEFAULT_MAX_CAPSULE_SIZE = 65_536


class CapsuleType(enum.IntEnum):
    """Capsule types from the IANA "HTTP Capsule Types" registry that
    trioquic's protocols use. Members are ints; a type read off the wire
    that is not listed here stays a plain int."""

    #: RFC 9297 section 3.5: an HTTP datagram on the stream (the fallback
    #: when HTTP/3 datagrams are not negotiated).
    DATAGRAM = 0x00
    #: WebTransport over HTTP/3: the session's close, with a code and reason.
    CLOSE_WEBTRANSPORT_SESSION = 0x2843
    #: WebTransport over HTTP/3: the peer will close the session soon.
    DRAIN_WEBTRANSPORT_SESSION = 0x78AE


@attrs.frozen
class Capsule:
    """One capsule: its type and its value."""

    type: int
    value: bytes

    def encode(self) -> bytes:
        """The capsule on the wire."""
        return encode_capsule(self.type, self.value)


def encode_capsule(capsule_type: int, value: bytes | bytearray | memoryview) -> bytes:
    """A capsule on the wire: type, length and value (RFC 9297 section
    3.2). Send it with the request stream's ``send``."""
    if not isinstance(capsule_type, int) or isinstance(capsule_type, bool):
        raise TypeError(
            f"capsule_type must be an int, got {type(capsule_type).__name__}"
        )
    if not 0 <= capsule_type < VARINT_LIMIT:
        raise ValueError(f"capsule_type must be in [0, 2**62), got {capsule_type}")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"value must be bytes, got {type(value).__name__}")
    return b"".join((encode_varint(capsule_type), encode_varint(len(value)), value))


class CapsuleError(H3Error):
    """A malformed capsule sequence: a capsule longer than allowed, or the
    stream ended inside a capsule. The stream carrying it is to be closed
    with :attr:`error_code` (``H3_GENERAL_PROTOCOL_ERROR``)."""

    def __init__(self, message: str) -> None:
        super().__init__(H3ErrorCode.GENERAL_PROTOCOL_ERROR, message)


class CapsuleDecoder:
    """A sans-io capsule parser: :meth:`feed` it the stream's bytes as they
    arrive, it returns the complete capsules; :meth:`finish` at the end of
    the stream.

    ``types`` are the capsule types the caller understands (``None``: all);
    the others are skipped as RFC 9297 asks, without being buffered, so a
    peer cannot make the decoder hold more than ``max_capsule_size`` bytes
    of value plus one header. A capsule of a kept type longer than
    ``max_capsule_size`` raises :exc:`CapsuleError`.
    """

    def __init__(
        self,
        *,
        types: Collection[int] | None = None,
        max_capsule_size: int = DEFAULT_MAX_CAPSULE_SIZE,
    ) -> None:
        if not isinstance(max_capsule_size, int) or isinstance(max_capsule_size, bool):
            kind = type(max_capsule_size).__name__
            raise TypeError(f"max_capsule_size must be an int, got {kind}")
        if max_capsule_size < 0:
            raise ValueError(f"max_capsule_size must be >= 0, got {max_capsule_size}")
        self._types = None if types is None else frozenset(int(t) for t in types)
        self._max = max_capsule_size
        self._buffer = bytearray()
        self._skip = 0  # bytes of an unknown capsule's value still to drop
        #: Capsules skipped because their type is not in ``types``.
        self.skipped = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Capsule]:
        """Take the next bytes of the stream; return the capsules they
        complete. Raises :exc:`CapsuleError` on a capsule too long to keep."""
        view = memoryview(data)
        if self._skip:
            dropped = min(self._skip, len(view))
            self._skip -= dropped
            view = view[dropped:]
        out: list[Capsule] = []
        if not view:
            return out
        self._buffer += view
        buffer = self._buffer
        offset = 0
        while True:
            header = decode_varint(buffer, offset)
            if header is None:
                break
            capsule_type, after_type = header
            length_field = decode_varint(buffer, after_type)
            if length_field is None:
                break
            length, start = length_field
            if self._types is not None and capsule_type not in self._types:
                self.skipped += 1
                available = len(buffer) - start
                if length > available:
                    self._skip = length - available
                    offset = len(buffer)
                    break
                offset = start + length
                continue
            if length > self._max:
                raise CapsuleError(
                    f"capsule of type 0x{capsule_type:x} announces {length} bytes; "
                    f"at most {self._max} are accepted"
                )
            end = start + length
            if end > len(buffer):
                break
            try:
                kind: int = CapsuleType(capsule_type)
            except ValueError:
                kind = capsule_type
            out.append(Capsule(kind, bytes(buffer[start:end])))
            offset = end
        del buffer[:offset]
        return out

    @property
    def pending(self) -> bool:
        """A capsule has started and is not complete."""
        return bool(self._buffer) or self._skip > 0

    def finish(self) -> None:
        """The stream ended: raises :exc:`CapsuleError` if it ended inside a
        capsule (RFC 9297 section 3.3)."""
        if self.pending:
            raise CapsuleError("the stream ended inside a capsule")


class CapsuleReader:
    """Capsules from an async byte source, one at a time.

    ``receive`` returns the stream's next bytes, ``b""`` at its end: an
    HTTP/3 request's or response's ``receive_chunk``, a trio stream's
    ``receive_some``. :meth:`receive` returns the next capsule, ``None`` at
    a clean end of the stream, and raises :exc:`CapsuleError` on a
    malformed one (the caller resets the stream with its code).
    ``async for capsule in reader`` does the same until the end.
    """

    def __init__(
        self,
        receive: Callable[[], Awaitable[bytes]],
        *,
        types: Collection[int] | None = None,
        max_capsule_size: int = DEFAULT_MAX_CAPSULE_SIZE,
    ) -> None:
        if not callable(receive):
            raise TypeError(
                "receive must be an async callable returning the next bytes"
            )
        self._receive = receive
        self.decoder = CapsuleDecoder(types=types, max_capsule_size=max_capsule_size)
        self._ready: list[Capsule] = []
        self._index = 0
        self._ended = False

    async def receive(self) -> Capsule | None:
        """The next capsule, or ``None`` once the stream has ended."""
        if self._index < len(self._ready):
            await trio.lowlevel.checkpoint()
        while self._index >= len(self._ready):
            if self._ended:
                await trio.lowlevel.checkpoint()
                return None
            data = await self._receive()
            if not data:
                self._ended = True
                self.decoder.finish()
                continue
            self._ready = self.decoder.feed(data)
            self._index = 0
        capsule = self._ready[self._index]
        self._index += 1
        return capsule

    def __aiter__(self) -> CapsuleReader:
        return self

    async def __anext__(self) -> Capsule:
        capsule = await self.receive()
        if capsule is None:
            raise StopAsyncIteration
        return capsule
