"""The fuzzer's own QUIC connections, whose keys it knows.

Each is an aioquic client connection the fuzzer drives by hand over a socket
of its own, configured to log its TLS secrets to the fuzzer. With them the
fuzzer seals packets the server decrypts: Initial and Handshake packets of a
connection still handshaking (its Finished held back for a while), and 1-RTT
packets of an established one, full of HTTP/3 requests, control-stream
frames and transport frames the server must take apart. These connections
are sacrificed: most end with an error the server sends, the rest are
abandoned and left to the server's idle timeout.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import ssl
import time
from collections import Counter
from typing import TextIO, cast

from _fuzz_mutate import SERVER_CID_LENGTH, Corpus, StreamPlan
from _fuzz_wire import (
    FUZZ_CIPHER_SUITE,
    HANDSHAKE,
    INITIAL,
    crypto_context,
    crypto_data,
    initial_crypto,
    open_initial,
    parse_long_header,
    seal_long,
    seal_short,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoContext
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted
from aioquic.quic.packet import QuicErrorCode

#: Requests the fuzzer's connections may open before the server's limit
#: (``Http3Settings.max_concurrent_requests``) closes them.
STREAM_LIMIT = 100


class _SecretLog:
    """Takes the NSS key-log lines aioquic writes: the client's secrets."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}

    def write(self, text: str) -> int:
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3:
                self.secrets[parts[0]] = bytes.fromhex(parts[2])
        return len(text)

    def flush(self) -> None:
        pass


def close_code_name(code: int, application: bool) -> str:
    """A readable name for a CONNECTION_CLOSE's error code: a transport code
    (``application`` false) or an HTTP/3 one."""
    if not application:
        if 0x100 <= code <= 0x1FF:
            return f"CRYPTO_ERROR(alert {code - 0x100})"
        try:
            return QuicErrorCode(code).name
        except ValueError:
            return hex(code)
    h3 = {
        0x100: "H3_NO_ERROR",
        0x101: "H3_GENERAL_PROTOCOL_ERROR",
        0x102: "H3_INTERNAL_ERROR",
        0x103: "H3_STREAM_CREATION_ERROR",
        0x104: "H3_CLOSED_CRITICAL_STREAM",
        0x105: "H3_FRAME_UNEXPECTED",
        0x106: "H3_FRAME_ERROR",
        0x107: "H3_EXCESSIVE_LOAD",
        0x108: "H3_ID_ERROR",
        0x109: "H3_SETTINGS_ERROR",
        0x10A: "H3_MISSING_SETTINGS",
        0x10B: "H3_REQUEST_REJECTED",
        0x10C: "H3_REQUEST_CANCELLED",
        0x10D: "H3_REQUEST_INCOMPLETE",
        0x10E: "H3_MESSAGE_ERROR",
        0x10F: "H3_CONNECT_ERROR",
        0x110: "H3_VERSION_FALLBACK",
        0x200: "QPACK_DECOMPRESSION_FAILED",
        0x201: "QPACK_ENCODER_STREAM_ERROR",
        0x202: "QPACK_DECODER_STREAM_ERROR",
    }
    return h3.get(code, hex(code))


#: Close codes that mean the server failed on what it was sent rather than
#: rejecting it: each is reported as a finding.
INTERNAL_ERRORS = frozenset({"INTERNAL_ERROR", "H3_INTERNAL_ERROR"})


class OwnConnection:
    """One connection of the fuzzer's, and how it is to be sacrificed."""

    def __init__(
        self,
        rng: random.Random,
        server: tuple[str, int],
        now: float,
        *,
        chaos: bool,
        hold_handshake: float,
        lifetime: float,
    ) -> None:
        self.server = server
        self.chaos = chaos
        self.streams = StreamPlan()
        self.created = now
        self.lifetime = lifetime
        self.hold_handshake = hold_handshake
        self.established_at: float | None = None
        self.counted = False
        #: Whether its datagrams are held back now (see ``hold_handshake``).
        self.holding = False
        #: Datagrams its aioquic connection sent (not the fuzzer's).
        self.datagrams_sent = 0
        self.terminated: ConnectionTerminated | None = None
        self.abandoned = False
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self._log = _SecretLog()
        configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            verify_mode=ssl.CERT_NONE,
            server_name="localhost",
            secrets_log_file=cast(TextIO, self._log),
            cipher_suites=[FUZZ_CIPHER_SUITE],
            idle_timeout=60.0,
        )
        self.quic = QuicConnection(configuration=configuration)
        self.quic.connect(server, now)
        self.original_dcid: bytes | None = None
        self.server_cid: bytes | None = None
        self._held: list[bytes] = []
        self._handshake_send: CryptoContext | None = None
        self._app_send: CryptoContext | None = None
        self._registered: set[int] = set()
        self.client_hello: bytes | None = None
        #: The frames most recently sealed, to report with an internal error.
        self.last_frames = b""
        #: Whether the fuzzer sealed Initial or Handshake packets for it: its
        #: handshake may then never complete on the server (a bogus CRYPTO
        #: frame at offset 0 ahead of the held Finished leaves the server's
        #: TLS waiting for a message that never comes), and the server's
        #: handshake timeout is the right end, not a finding.
        self.handshake_fuzzed = False

    # -- keys ----------------------------------------------------------------

    def _packet_number(self) -> int:
        """A packet number just past the client's own, which the client then
        skips (aioquic numbers every packet of a connection from one
        counter)."""
        quic = self.quic
        number = int(getattr(quic, "_packet_number", 0))
        if hasattr(quic, "_packet_number"):
            quic._packet_number = number + 1
        return number

    def _destination(self) -> bytes | None:
        return self.server_cid or self.original_dcid

    def seal_initial(self, frames: bytes) -> bytes | None:
        if self.original_dcid is None or self._destination() is None:
            return None
        self.last_frames = frames
        self.handshake_fuzzed = True
        return seal_long(
            initial_crypto(self.original_dcid).send,
            packet_type=INITIAL,
            destination_cid=self._destination() or b"",
            source_cid=self.quic.host_cid,
            payload=frames,
            packet_number=self._packet_number(),
            pad_to=1200,
        )

    def seal_handshake(self, frames: bytes) -> bytes | None:
        secret = self._log.secrets.get("CLIENT_HANDSHAKE_TRAFFIC_SECRET")
        if secret is None or self.server_cid is None:
            return None
        if self._handshake_send is None:
            self._handshake_send = crypto_context(secret)
        self.last_frames = frames
        self.handshake_fuzzed = True
        return seal_long(
            self._handshake_send,
            packet_type=HANDSHAKE,
            destination_cid=self.server_cid,
            source_cid=self.quic.host_cid,
            payload=frames,
            packet_number=self._packet_number(),
        )

    def seal_1rtt(self, frames: bytes, key_phase: int = 0) -> bytes | None:
        secret = self._log.secrets.get("CLIENT_TRAFFIC_SECRET_0")
        if secret is None or self.server_cid is None:
            return None
        if self._app_send is None:
            self._app_send = crypto_context(secret)
        # Requests on streams the client does not know would make it close
        # the connection when the answers come: open them on its side.
        for stream_id in self.streams.offsets:
            if (
                stream_id % 4 == 0
                and stream_id not in self._registered
                and stream_id // 4 < STREAM_LIMIT
            ):
                self._registered.add(stream_id)
                with contextlib.suppress(Exception):
                    self.quic.send_stream_data(stream_id, b"")
        self.last_frames = frames
        return seal_short(
            self._app_send,
            destination_cid=self.server_cid,
            payload=frames,
            packet_number=self._packet_number(),
            key_phase=key_phase,
        )

    # -- state ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.terminated is None and not self.abandoned

    @property
    def handshaking(self) -> bool:
        """Handshake keys known, the client's Finished not yet sent (held
        back: the client completes its side on the server's Finished)."""
        return (
            self.alive
            and self.holding
            and "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in self._log.secrets
            and self.server_cid is not None
        )

    @property
    def established(self) -> bool:
        return self.alive and self.established_at is not None and not self.holding

    def _holding(self, now: float) -> bool:
        return (
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in self._log.secrets
            and now < self.created + self.hold_handshake
        )

    def poll(self, now: float, corpus: Corpus) -> None:
        """Take what arrived, run the timers, send what is due."""
        if not self.alive:
            return
        quic = self.quic
        while True:
            try:
                data, addr = self.socket.recvfrom(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    continue
                raise
            if self.server_cid is None:
                header = parse_long_header(data)
                if header is not None and len(header.source_cid) == SERVER_CID_LENGTH:
                    self.server_cid = header.source_cid
                    corpus.note_cid(header.source_cid)
            quic.receive_datagram(data, addr, now)
        timer = quic.get_timer()
        if timer is not None and timer <= now:
            quic.handle_timer(now)
        while (event := quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.established_at = now
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
        holding = self.holding = self._holding(now)
        for data, _ in quic.datagrams_to_send(now):
            if self.original_dcid is None:
                header = parse_long_header(data)
                if header is not None:
                    self.original_dcid = header.destination_cid
                opened = open_initial(data, client_sent=True)
                if opened is not None:
                    self.client_hello = crypto_data(opened[1])
            corpus.add(data)
            if holding:
                self._held.append(data)
            else:
                self._send(data)
        if not holding and self._held:
            held, self._held = self._held, []
            for data in held:
                self._send(data)

    def send(self, data: bytes) -> None:
        """Send a datagram the fuzzer made (not counted here)."""
        if self.alive:
            with contextlib.suppress(OSError):
                self.socket.sendto(data, self.server)

    def _send(self, data: bytes) -> None:
        self.datagrams_sent += 1
        with contextlib.suppress(OSError):  # a full buffer: UDP drops it
            self.socket.sendto(data, self.server)

    def close(self, graceful: bool, now: float) -> None:
        if graceful and self.terminated is None:
            self.quic.close(error_code=0x100, reason_phrase="done")
            for data, _ in self.quic.datagrams_to_send(now):
                self._send(data)
        self.abandoned = True
        self.socket.close()


class OwnConnections:
    """A small pool of the fuzzer's connections, renewed as they end."""

    def __init__(
        self,
        rng: random.Random,
        server: tuple[str, int],
        corpus: Corpus,
        *,
        size: int = 3,
        open_interval: float = 0.2,
    ) -> None:
        self._rng = rng
        self._server = server
        self._corpus = corpus
        self._size = size
        self._open_interval = open_interval
        self._last_open = -1e9
        self.connections: list[OwnConnection] = []
        self.opened = 0
        self.established_count = 0
        self.handshakes_failed = 0
        #: How the server closed them, by close code.
        self.close_codes: Counter[str] = Counter()
        #: Closes with an internal error: (code, reason, last frames sealed).
        self.internal_errors: list[tuple[str, str, bytes]] = []
        self.running = True
        #: Datagrams sent by the connections that ended.
        self.datagrams_sent = 0

    def poll(self, now: float) -> None:
        rng = self._rng
        keep = []
        for connection in self.connections:
            connection.poll(now, self._corpus)
            if connection.established_at is not None and not connection.counted:
                connection.counted = True
                self.established_count += 1
            if connection.client_hello and len(self._corpus.client_hellos) < 16:
                self._corpus.client_hellos.append(connection.client_hello)
                connection.client_hello = None
            if connection.terminated is not None:
                event = connection.terminated
                name = close_code_name(event.error_code, event.frame_type is None)
                if name in INTERNAL_ERRORS:
                    self.close_codes[f"{name} ({event.reason_phrase})"] += 1
                else:
                    self.close_codes[name] += 1
                if (
                    name in INTERNAL_ERRORS
                    and event.reason_phrase != "Idle timeout"  # aioquic's own
                    and not (
                        connection.handshake_fuzzed
                        and event.reason_phrase == "handshake timeout"
                    )
                    and len(self.internal_errors) < 50
                ):
                    self.internal_errors.append(
                        (name, event.reason_phrase, connection.last_frames)
                    )
                connection.close(False, now)
                self.datagrams_sent += connection.datagrams_sent
                continue
            expired = (
                connection.established_at is not None
                and now > connection.established_at + connection.lifetime
            ) or (connection.established_at is None and now > connection.created + 10)
            if expired or not self.running:
                if connection.established_at is None:
                    self.handshakes_failed += 1
                connection.close(rng.random() < 0.3 and self.running, now)
                self.datagrams_sent += connection.datagrams_sent
                continue
            keep.append(connection)
        self.connections = keep
        if (
            self.running
            and len(self.connections) < self._size
            and now - self._last_open >= self._open_interval
        ):
            self._last_open = now
            self.opened += 1
            self.connections.append(
                OwnConnection(
                    rng,
                    self._server,
                    now,
                    chaos=rng.random() < 0.3,
                    hold_handshake=rng.choice([0.0, 0.0, 0.3, 1.0]),
                    lifetime=rng.uniform(0.5, 6.0),
                )
            )

    def stop(self) -> None:
        """Abandon them all (the server's idle timeout ends them)."""
        self.running = False
        for connection in self.connections:
            connection.close(False, time.monotonic())
            self.datagrams_sent += connection.datagrams_sent
        self.connections = []

    def handshaking(self, rng: random.Random) -> OwnConnection | None:
        candidates = [c for c in self.connections if c.handshaking]
        return rng.choice(candidates) if candidates else None

    def established(self, rng: random.Random) -> OwnConnection | None:
        candidates = [c for c in self.connections if c.established]
        return rng.choice(candidates) if candidates else None
