""":class:`HTTP3Transport`: httpx over trioquic's HTTP/3 client."""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import attrs
import httpx
import trio

from .._errors import (
    CloseCause,
    ConnectionClosed,
    HandshakeTimeout,
    PeerUnreachable,
)
from .._settings import QuicSettings
from .._udp import DatagramSocket
from ..h3 import (
    ConnectionGoingAway,
    H3Error,
    H3ErrorCode,
    Http3Settings,
    RequestRejected,
    Response,
)
from ..h3._errors import _Stopped
from ..h3._headers import Headers
from ._pool import Acquired, Connection, Origin, Pool, PoolClosed

T = TypeVar("T", bound="HTTP3Transport")

#: Methods whose requests may go as 0-RTT early data (RFC 8470: an attacker
#: can replay early data, so only requests without side effects).
_EARLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Connection-specific fields HTTP/3 forbids (RFC 9114 section 4.2); the
#: Host field becomes ``:authority``.
_DROPPED_FIELDS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    }
)
_HTTP3 = b"HTTP/3"
#: Times a request the server did not process (GOAWAY, H3_REQUEST_REJECTED)
#: is sent, each time on a connection that was usable: many requests moved
#: at once to a new connection may meet its GOAWAY too.
_MAX_ATTEMPTS = 8
_NO_ERROR_CODES = (0, int(H3ErrorCode.NO_ERROR))
#: Header sections remembered by a transport (a client sends few).
_FIELDS_CACHE_SIZE = 64
#: Bytes of a response body that already arrived given to httpx between two
#: schedule points.
_YIELD_EVERY = 64 * 1024


def _check_timeout_value(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be greater than 0 (or None), got {value!r}")
    return float(value)


class HTTP3Transport(httpx.AsyncBaseTransport):
    """An httpx transport that speaks HTTP/3 (over QUIC) with trioquic, for
    ``httpx.AsyncClient`` under trio::

        async with httpx.AsyncClient(transport=HTTP3Transport()) as client:
            response = await client.get("https://example.com/")
            assert response.http_version == "HTTP/3"

    The transport runs its connections in a nursery it opens when the client
    is entered, so it must be used with ``async with`` (a request otherwise
    raises :exc:`RuntimeError`). See docs/httpx.rst.

    :param verify: ``True`` (the default CA store), ``False`` (no
        verification: development only), the path of a PEM CA bundle, or an
        :class:`ssl.SSLContext` (only its verify mode and the CA
        certificates it holds are used).
    :param cert: a client certificate (not supported yet: must be ``None``).
    :param settings: :class:`~trioquic.QuicSettings` for every connection
        (``verify`` overrides its ``ca_certs`` and ``verify_peer``).
    :param http3_settings: :class:`~trioquic.h3.Http3Settings`.
    :param max_connections_per_origin: connections opened to one origin
        when the server's limit on concurrent requests is reached on each.
    :param keepalive_expiry: seconds an idle connection is kept (``None``:
        until the server or QUIC's idle timeout closes it).
    :param zero_rtt: send GET, HEAD and OPTIONS requests as 0-RTT early data
        on a connection resumed with a session ticket from the same origin.
    :param local_address: the local IP address to send from.
    :param socket_factory: makes the datagram socket of each new connection:
        called as ``socket_factory(host, port)`` with the request URL's
        origin, it returns a :class:`~trioquic.lowlevel.DatagramSocket` (a
        :class:`trioquic.lowlevel.UdpSocket`, a
        :class:`trioquic.testing.MemorySocket`, ...). The connection is sent
        to ``(host, port)`` through it as it is, without name resolution
        (so, for a UDP socket, give URLs with IP addresses), and the
        transport closes the socket when the connection ends. The server's
        certificate is checked against ``host`` unless ``settings`` has a
        ``server_name``. Not with ``local_address``.
    """

    def __init__(
        self,
        *,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        cert: Any = None,
        settings: QuicSettings | None = None,
        http3_settings: Http3Settings | None = None,
        max_connections_per_origin: int = 4,
        keepalive_expiry: float | None = 5.0,
        zero_rtt: bool = False,
        local_address: str | None = None,
        socket_factory: Callable[[str, int], DatagramSocket] | None = None,
    ) -> None:
        if settings is None:
            settings = QuicSettings()
        elif not isinstance(settings, QuicSettings):
            raise TypeError(
                "settings must be a trioquic.QuicSettings, "
                f"got {type(settings).__name__}"
            )
        if http3_settings is None:
            http3_settings = Http3Settings()
        elif not isinstance(http3_settings, Http3Settings):
            raise TypeError(
                "http3_settings must be a trioquic.h3.Http3Settings, "
                f"got {type(http3_settings).__name__}"
            )
        if cert is not None:
            raise ValueError(
                "client certificates are not supported by trioquic's HTTP/3 "
                "client yet: pass cert=None"
            )
        if isinstance(max_connections_per_origin, bool) or not isinstance(
            max_connections_per_origin, int
        ):
            raise TypeError(
                "max_connections_per_origin must be an int, "
                f"got {type(max_connections_per_origin).__name__}"
            )
        if max_connections_per_origin < 1:
            raise ValueError(
                "max_connections_per_origin must be at least 1, "
                f"got {max_connections_per_origin}"
            )
        self._keepalive_expiry = _check_timeout_value(
            "keepalive_expiry", keepalive_expiry
        )
        if not isinstance(zero_rtt, bool):
            raise TypeError(f"zero_rtt must be a bool, got {type(zero_rtt).__name__}")
        if local_address is not None and not isinstance(local_address, str):
            raise TypeError(
                "local_address must be an IP address as a str (e.g. '0.0.0.0'), "
                f"got {type(local_address).__name__}"
            )
        if socket_factory is not None:
            if not callable(socket_factory):
                raise TypeError(
                    "socket_factory must be a callable taking (host, port) and "
                    "returning a datagram socket, "
                    f"got {type(socket_factory).__name__}"
                )
            if local_address is not None:
                raise ValueError(
                    "give local_address or socket_factory, not both (bind the "
                    "socket socket_factory returns to the local address)"
                )
        self._ca_file: str | None = None  # a temporary file we own
        self._settings = self._apply_verify(settings, verify)
        self._http3_settings = http3_settings
        self._max_connections = max_connections_per_origin
        self._zero_rtt = zero_rtt
        self._local_address = local_address
        self._socket_factory = socket_factory
        self._pool: Pool | None = None
        #: httpx's raw header fields -> (authority, HTTP/3 fields).
        self._fields: dict[tuple[tuple[bytes, bytes], ...], tuple[str, Headers]] = {}
        self._nursery_manager: Any = None
        self._closed = False

    def _apply_verify(
        self,
        settings: QuicSettings,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext,
    ) -> QuicSettings:
        if verify is True:
            return attrs.evolve(settings, verify_peer=True)
        if verify is False:
            return attrs.evolve(settings, verify_peer=False)
        if isinstance(verify, str | os.PathLike):
            path = os.fspath(verify)
            if not os.path.isfile(path):
                raise ValueError(
                    f"verify={path!r}: no such CA bundle file (give a PEM file, "
                    "True for the default CA store, or False)"
                )
            return attrs.evolve(settings, ca_certs=path, verify_peer=True)
        if isinstance(verify, ssl.SSLContext):
            if verify.verify_mode == ssl.CERT_NONE:
                return attrs.evolve(settings, verify_peer=False)
            cas = verify.get_ca_certs(binary_form=True)
            if not cas:
                # The context trusts the default store (loaded lazily, so
                # its certificates cannot be listed): so do we.
                return attrs.evolve(settings, verify_peer=True)
            fd, name = tempfile.mkstemp(prefix="trioquic-httpx-", suffix=".pem")
            with os.fdopen(fd, "w") as file:
                for der in cas:
                    file.write(ssl.DER_cert_to_PEM_cert(der))
            self._ca_file = name
            return attrs.evolve(settings, ca_certs=name, verify_peer=True)
        raise TypeError(
            "verify must be True, False, the path of a PEM CA bundle, or an "
            f"ssl.SSLContext, got {type(verify).__name__}"
        )

    # -- lifetime ------------------------------------------------------------

    async def __aenter__(self: T) -> T:
        if self._nursery_manager is not None or self._closed:
            raise RuntimeError("an HTTP3Transport can be entered only once")
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._nursery_manager = manager
        self._pool = Pool(
            nursery,
            settings=self._settings,
            http3_settings=self._http3_settings,
            max_connections=self._max_connections,
            keepalive_expiry=self._keepalive_expiry,
            zero_rtt=self._zero_rtt,
            local_address=self._local_address,
            socket_factory=self._socket_factory,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        manager, self._nursery_manager = self._nursery_manager, None
        try:
            self._close()
        finally:
            if manager is not None:
                # Waits for the connections to close (each within its close
                # grace period). The body's own exception is not passed: it
                # propagates as it is (a nursery would wrap it in a group).
                await manager.__aexit__(None, None, None)

    def _close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.close()
        if self._ca_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._ca_file)
            self._ca_file = None

    async def aclose(self) -> None:
        """Close every connection gracefully (GOAWAY, then CONNECTION_CLOSE
        with H3_NO_ERROR, each within ``close_grace_period``). Idempotent;
        leaving the client's ``async with`` also waits for them."""
        self._close()
        await trio.lowlevel.checkpoint()

    @property
    def connections(self) -> dict[Origin, list[Connection]]:
        """The pooled connections, by ``(host, port)`` (for inspection)."""
        return self._pool.connections if self._pool is not None else {}

    @property
    def session_tickets(self) -> dict[Origin, bytes]:
        """The newest unused TLS session ticket of each origin."""
        return self._pool.tickets if self._pool is not None else {}

    # -- requests ---------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool
        if pool is None or self._closed:
            if self._closed:
                raise RuntimeError("this HTTP3Transport is closed")
            raise RuntimeError(
                "HTTP3Transport runs its connections in a nursery: use "
                "'async with httpx.AsyncClient(transport=HTTP3Transport()) as "
                "client:' (or 'async with transport:')"
            )
        url = request.url
        if url.scheme != "https":
            raise httpx.UnsupportedProtocol(
                f"HTTP/3 is for https:// URLs only, not {url.scheme}:// "
                f"({url}): use httpx's default transport for it",
                request=request,
            )
        origin = (url.host, url.port or 443)
        timeouts = request.extensions.get("timeout") or {}
        method = request.method
        # A client sends the same header fields again and again: they are
        # converted once.
        raw = tuple(request.headers.raw)
        converted = self._fields.get(raw)
        if converted is None:
            converted = _convert_fields(raw)
            if len(self._fields) >= _FIELDS_CACHE_SIZE:
                self._fields.clear()
            self._fields[raw] = converted
        authority, headers = converted
        if not authority:
            authority = url.netloc.decode("ascii")
        path = url.raw_path.decode("ascii")
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None  # streamed: sent as it comes, not replayable
        attempts = 0
        while True:
            attempts += 1
            acquired = await self._acquire(
                pool, request, origin, method, path, headers, authority, body, timeouts
            )
            conn, stream = acquired.connection, acquired.stream
            try:
                response = await self._exchange(request, acquired, body, timeouts)
            except RequestRejected as exc:
                # Not processed by the server (GOAWAY or H3_REQUEST_REJECTED):
                # safe to send again, once, on another connection.
                pool.release(conn)
                if attempts < _MAX_ATTEMPTS and body is not None:
                    continue
                _raise_mapped(exc, "read", request)
            except BaseException:
                stream.cancel()
                pool.release(conn)
                raise
            if (
                response.status == 425
                and stream.early
                and attempts == 1
                and body is not None
            ):
                # Too Early (RFC 8470): again, after the handshake.
                await response.aclose()
                pool.release(conn)
                assert conn.client is not None
                with contextlib.suppress(ConnectionClosed):
                    await conn.client.wait_handshake()
                continue
            stream_out: httpx.AsyncByteStream
            try:
                # Small responses have often arrived whole with their
                # headers: taken at once, the connection is free again.
                content = response.read_nowait()
            except trio.WouldBlock:
                stream_out = ResponseStream(
                    pool, conn, response, _timeout(timeouts, "read"), request
                )
            else:
                pool.release(conn)
                stream_out = _CompleteBody(content)
            return httpx.Response(
                response.status,
                headers=response.headers,
                stream=stream_out,
                extensions={"http_version": _HTTP3},
            )

    async def _acquire(
        self,
        pool: Pool,
        request: httpx.Request,
        origin: Origin,
        method: str,
        path: str,
        headers: Headers,
        authority: str,
        body: bytes | None,
        timeouts: dict[str, float | None],
    ) -> Acquired:
        connect = _timeout(timeouts, "connect")
        try:
            return await pool.acquire(
                origin,
                method,
                path,
                headers,
                authority=authority,
                end_stream=body == b"",
                early_ok=method in _EARLY_METHODS,
                connect_timeout=connect,
                pool_timeout=_timeout(timeouts, "pool"),
                connect_timeout_error=lambda: httpx.ConnectTimeout(
                    f"no HTTP/3 connection to {origin[0]}:{origin[1]} "
                    f"within {connect} s",
                    request=request,
                ),
                pool_timeout_error=lambda: httpx.PoolTimeout(
                    f"no HTTP/3 stream free to {origin[0]}:{origin[1]} in time",
                    request=request,
                ),
            )
        except httpx.TransportError:
            raise
        except PoolClosed as exc:
            raise RuntimeError("this HTTP3Transport is closed") from exc
        except Exception as exc:
            _raise_mapped(exc, "connect", request)

    async def _exchange(
        self,
        request: httpx.Request,
        acquired: Acquired,
        body: bytes | None,
        timeouts: dict[str, float | None],
    ) -> Response:
        """Send the body, wait for the response's headers."""
        stream = acquired.stream
        write = _timeout(timeouts, "write")
        try:
            if body is None:
                source = request.stream
                if not isinstance(source, httpx.AsyncByteStream):
                    raise TypeError(
                        "HTTP3Transport needs an async request body "
                        "(httpx.AsyncClient makes one)"
                    )
                async for chunk in source:
                    if chunk:
                        await _within(
                            write, stream.send, chunk, _write_timeout, request
                        )
                await _within(write, stream.finish, None, _write_timeout, request)
            elif body:
                # The whole body and its end in one step.
                await _within(
                    write,
                    functools.partial(stream.send, end_stream=True),
                    body,
                    _write_timeout,
                    request,
                )
        except _Stopped:
            pass  # the server answered early and stopped reading: read on
        except (httpx.TransportError, RequestRejected):
            raise
        except Exception as exc:
            rejection = stream.rejection
            if rejection is not None:
                # GOAWAY while the body was being sent: not processed.
                raise rejection from exc
            _raise_mapped(exc, "write", request)
        read = _timeout(timeouts, "read")
        try:
            if read is None:
                return await stream.response()
            with trio.move_on_after(read) as scope:
                return await stream.response()
            assert scope.cancelled_caught
            raise httpx.ReadTimeout(
                f"no response headers within {read} s", request=request
            )
        except (httpx.TransportError, RequestRejected):
            raise
        except Exception as exc:
            _raise_mapped(exc, "read", request)


def _convert_fields(raw: tuple[tuple[bytes, bytes], ...]) -> tuple[str, Headers]:
    """httpx's header fields as HTTP/3 sends them: names in lowercase,
    the connection-specific ones dropped, Host as the authority (``""``
    without one)."""
    authority = ""
    headers: Headers = []
    for name, value in raw:
        lname = name.lower()
        if lname == b"host":
            authority = value.decode("ascii")
        elif lname in _DROPPED_FIELDS or (
            lname == b"te" and value.lower() != b"trailers"
        ):
            continue
        elif lname.startswith(b":"):
            raise ValueError(
                f"pseudo-header fields are set by the transport, not passed: {name!r}"
            )
        else:
            headers.append((lname, value))
    return authority, headers


def _timeout(timeouts: dict[str, float | None], kind: str) -> float | None:
    value = timeouts.get(kind)
    return None if value is None else float(value)


def _write_timeout(request: httpx.Request, seconds: float) -> httpx.TimeoutException:
    return httpx.WriteTimeout(
        f"the request body could not be sent within {seconds} s", request=request
    )


async def _within(
    seconds: float | None,
    fn: Callable[[Any], Any],
    arg: Any,
    error: Callable[[httpx.Request, float], httpx.TimeoutException],
    request: httpx.Request,
) -> None:
    if seconds is None:
        await fn(arg)
        return
    with trio.move_on_after(seconds) as scope:
        await fn(arg)
    if scope.cancelled_caught:
        raise error(request, seconds)


def _raise_mapped(exc: BaseException, phase: str, request: httpx.Request) -> NoReturn:
    """Raise the httpx exception a user of httpx expects for ``exc``."""
    message = str(exc) or type(exc).__name__
    mapped: httpx.TransportError
    if phase == "connect":
        if isinstance(exc, HandshakeTimeout):
            mapped = httpx.ConnectTimeout(message, request=request)
        else:
            # Refused (ICMP), unreachable, TLS failure, name resolution...
            mapped = httpx.ConnectError(message, request=request)
    elif isinstance(exc, ConnectionClosed):
        reason = exc.reason
        if (
            isinstance(exc, PeerUnreachable)
            or reason.cause is CloseCause.HANDSHAKE_TIMEOUT
        ):
            mapped = httpx.ConnectError(message, request=request)
        elif reason.by_peer and reason.error_code not in _NO_ERROR_CODES:
            mapped = httpx.RemoteProtocolError(message, request=request)
        elif phase == "write":
            mapped = httpx.WriteError(message, request=request)
        else:
            mapped = httpx.ReadError(message, request=request)
    elif isinstance(exc, H3Error | ConnectionGoingAway):
        mapped = httpx.RemoteProtocolError(message, request=request)
    elif isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
        if phase == "write":
            mapped = httpx.WriteError(message, request=request)
        else:
            mapped = httpx.ReadError(message, request=request)
    else:
        raise exc
    raise mapped from exc


class _CompleteBody(httpx.AsyncByteStream):
    """A response body that had all arrived with the headers (its request is
    over and its connection released): given to httpx as it is, without
    waiting, copying or checkpointing (the request waited for its answer)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    # An iterator of its own, not an async generator: no generator to start,
    # hook and finalize for one piece.
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        content = self._content
        if not content:
            raise StopAsyncIteration
        self._content = b""
        return content

    async def aclose(self) -> None:
        self._content = b""


class ResponseStream(httpx.AsyncByteStream):
    """A response body as httpx reads it: chunks as they arrive (QUIC credit
    is granted as they are taken, so a slow reader slows the server down),
    each within the read timeout. Closing it before the end asks the server
    to stop sending (STOP_SENDING)."""

    def __init__(
        self,
        pool: Pool,
        connection: Connection,
        response: Response,
        read_timeout: float | None,
        request: httpx.Request,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._response = response
        self._read_timeout = read_timeout
        self._request = request
        self._released = False

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        response = self._response
        timeout = self._read_timeout
        receive = response.receive_chunk
        receive_nowait = response.receive_chunk_nowait
        unyielded = 0
        try:
            while True:
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    # What has arrived needs no deadline.
                    chunk = receive_nowait()
                except trio.WouldBlock:
                    if timeout is None:
                        chunk = await receive()
                    else:
                        with trio.move_on_after(timeout) as scope:
                            chunk = await receive()
                        if scope.cancelled_caught:
                            raise httpx.ReadTimeout(
                                f"no response data within {timeout} s",
                                request=self._request,
                            ) from None
                else:
                    # A schedule point per _YIELD_EVERY bytes taken without
                    # waiting, not per piece (a piece is a packet's worth).
                    unyielded += len(chunk)
                    if unyielded >= _YIELD_EVERY:
                        unyielded = 0
                        await trio.lowlevel.cancel_shielded_checkpoint()
                if not chunk:
                    break
                yield chunk
        except httpx.TransportError:
            raise
        except Exception as exc:
            _raise_mapped(exc, "read", self._request)
        self._release()

    async def aclose(self) -> None:
        if not self._released:
            await self._response.aclose()
            self._release()
        else:
            await trio.lowlevel.checkpoint()
