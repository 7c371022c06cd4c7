"""DNS over QUIC (trioquic.doq) on loopback: dnspython's own DoQ client (an
independent implementation) against serve_doq, the forwarder against a UDP
DNS server written here, malformed queries from trioquic's raw QUIC client
with the outcomes RFC 9250 requires, limits, 0-RTT and shutdown."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import dns.asyncbackend
import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.quic
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.update
import pytest
import trio

import trioquic
from trioquic.doq import (
    DoqErrorCode,
    DoqServer,
    DoqSettings,
    QueryContext,
    UdpForwarder,
    serve_doq,
)
from trioquic.testing import client_settings, development_certificate, server_settings

TRIO = dns.asyncbackend.get_backend("trio")
CA = str(development_certificate().certificate_path)
HOST = "127.0.0.1"

ZONE = {
    ("www.example.test.", dns.rdatatype.A): ["192.0.2.1", "192.0.2.2"],
    ("www.example.test.", dns.rdatatype.AAAA): ["2001:db8::1"],
    # About 32 KB of TXT: more than a QUIC packet, a UDP answer, one window.
    ("big.example.test.", dns.rdatatype.TXT): [
        f'"record {i:03d} {"x" * 200}"' for i in range(150)
    ],
}


async def zone_handler(
    query: dns.message.Message, context: QueryContext
) -> dns.message.Message:
    """A tiny authoritative server for example.test."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    question = query.question[0]
    key = (question.name.to_text(), question.rdtype)
    if key in ZONE:
        response.answer.append(
            dns.rrset.from_text_list(
                question.name, 300, "IN", question.rdtype, ZONE[key]
            )
        )
    elif not any(name == key[0] for name, _ in ZONE):
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response


@asynccontextmanager
async def running(
    handler: Any = zone_handler, doq_settings: DoqSettings | None = None, **quic: Any
) -> AsyncIterator[DoqServer]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_doq,
                handler,
                0,
                host=HOST,
                settings=server_settings(**quic),
                doq_settings=doq_settings,
            )
        )
        yield server
        nursery.cancel_scope.cancel()


async def dnspython_query(
    port: int, query: dns.message.Message, connection: Any = None
) -> dns.message.Message:
    return await dns.asyncquery.quic(
        query,
        HOST,
        port=port,
        timeout=10,
        verify=CA,
        server_hostname="localhost",
        backend=TRIO,
        connection=connection,
    )


def doq_client_settings(**changes: Any) -> trioquic.QuicSettings:
    return client_settings(alpn_protocols=["doq"], **changes)


@attrs.define
class RawOutcome:
    """What trioquic's raw QUIC client saw on one stream."""

    data: bytes | None = None  # everything the server sent, then FIN
    reset_code: int | None = None  # the server reset the stream
    close: trioquic.CloseReason | None = None  # the connection ended

    def message(self) -> dns.message.Message:
        assert self.data is not None, self
        length = int.from_bytes(self.data[:2], "big")
        assert len(self.data) == 2 + length
        return dns.message.from_wire(self.data[2:])


async def read_all(stream: trioquic.QuicStream, outcome: RawOutcome) -> None:
    data = bytearray()
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except trioquic.StreamReset as exc:
        outcome.reset_code = exc.error_code
        return
    outcome.data = bytes(data)


async def raw_exchange(
    port: int, payload: bytes, *, fin: bool = True, unidirectional: bool = False
) -> RawOutcome:
    """Send ``payload`` on a new stream; what comes back, or how the
    connection ended."""
    outcome = RawOutcome()
    try:
        async with trioquic.open_quic_connection(
            HOST, port, settings=doq_client_settings()
        ) as connection:
            if unidirectional:
                send_stream = await connection.open_unidirectional_stream()
                await send_stream.send_all(payload)
                await send_stream.aclose()
                outcome.close = (await connection.wait_closed()).reason
                return outcome
            stream = await connection.open_stream()
            await stream.send_all(payload)
            if fin:
                await stream.send_eof()
            await read_all(stream, outcome)
            if outcome.data is None and outcome.reset_code is None:
                outcome.close = connection.close_reason
    except trioquic.ConnectionClosed as exc:
        outcome.close = exc.reason
    return outcome


def frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def query_wire(name: str = "www.example.test", rdtype: str = "A", **kw: Any) -> bytes:
    query = dns.message.make_query(name, rdtype, **kw)
    query.id = 0
    return query.to_wire()


def assert_protocol_error(outcome: RawOutcome, words: str) -> None:
    assert outcome.close is not None, outcome
    assert outcome.close.by_peer
    assert not outcome.close.is_transport
    assert outcome.close.error_code == DoqErrorCode.DOQ_PROTOCOL_ERROR
    assert words in outcome.close.reason


# -- dnspython's DoQ client --------------------------------------------------------


async def test_dnspython_a_aaaa_nxdomain() -> None:
    with trio.fail_after(30):
        async with running() as server:
            a = await dnspython_query(
                server.port, dns.message.make_query("www.example.test", "A")
            )
            aaaa = await dnspython_query(
                server.port, dns.message.make_query("www.example.test", "AAAA")
            )
            missing = await dnspython_query(
                server.port, dns.message.make_query("nope.example.test", "A")
            )
            stats = server.statistics()
    assert a.id == 0 and a.rcode() == dns.rcode.NOERROR
    assert sorted(rr.to_text() for rr in a.answer[0]) == ["192.0.2.1", "192.0.2.2"]
    assert [rr.to_text() for rr in aaaa.answer[0]] == ["2001:db8::1"]
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer
    assert stats.queries == 3 and stats.responses == 3


async def test_dnspython_many_queries_on_one_connection() -> None:
    peers: list[Any] = []

    async def handler(query: dns.message.Message, context: QueryContext) -> Any:
        peers.append(context.peer_address)
        assert not context.early_data
        return await zone_handler(query, context)

    names = [f"q{i}.example.test" for i in range(8)] + ["www.example.test"]
    answers: dict[str, int] = {}
    with trio.fail_after(30):
        async with running(handler) as server:
            cfactory, mfactory = dns.quic.factories_for_backend(TRIO)
            async with (
                cfactory() as context,
                mfactory(context, verify_mode=CA, server_name="localhost") as manager,
            ):
                connection = manager.connect(HOST, server.port)

                async def one(name: str) -> None:
                    query = dns.message.make_query(name, "A")
                    response = await dnspython_query(server.port, query, connection)
                    answers[name] = response.rcode()

                # One after the other, then all at once.
                await one("first.example.test")
                async with trio.open_nursery() as nursery:
                    for name in names:
                        nursery.start_soon(one, name)
                await connection.close()
    assert answers["www.example.test"] == dns.rcode.NOERROR
    assert answers["q3.example.test"] == dns.rcode.NXDOMAIN
    assert len(answers) == len(names) + 1
    assert len(peers) == len(names) + 1
    assert len(set(peers)) == 1  # every query on the same connection


async def test_dnspython_large_answer() -> None:
    with trio.fail_after(30):
        async with running() as server:
            response = await dnspython_query(
                server.port, dns.message.make_query("big.example.test", "TXT")
            )
    assert len(response.to_wire()) > 30_000
    texts = sorted(rr.to_text() for rr in response.answer[0])
    assert len(texts) == 150 and texts[0].startswith('"record 000 ')


async def test_padded_query_gets_a_padded_response() -> None:
    padded = query_wire(use_edns=0, pad=128)
    plain = query_wire(use_edns=0)
    with trio.fail_after(30):
        async with running() as server:
            with_pad = await raw_exchange(server.port, frame(padded))
            without = await raw_exchange(server.port, frame(plain))
    assert len(with_pad.message().to_wire()) > 0
    assert (len(with_pad.data or b"") - 2) % 468 == 0
    assert (len(without.data or b"") - 2) % 468 != 0
    assert with_pad.message().answer == without.message().answer


# -- forwarding ----------------------------------------------------------------------


class UpstreamDns:
    """A classic DNS server on loopback (UDP, and TCP for truncated
    answers) answering from ZONE; it records the Message IDs it saw. Names
    starting with ``tc.`` are answered truncated over UDP; ``slow.`` names
    are answered only on the second try."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.tcp_queries = 0
        self.seen: dict[str, int] = {}
        self.port = 0

    def answer(self, data: bytes, *, tcp: bool) -> bytes | None:
        query = dns.message.from_wire(data)
        self.ids.append(query.id)
        name = query.question[0].name.to_text()
        self.seen[name] = self.seen.get(name, 0) + 1
        if name.startswith("slow.") and self.seen[name] == 1:
            return None
        response = dns.message.make_response(query)
        lookup = name.replace("tc.", "www.", 1)
        key = (lookup, query.question[0].rdtype)
        if name.startswith("tc.") and not tcp:
            response.flags |= dns.flags.TC
        elif key in ZONE:
            response.answer.append(
                dns.rrset.from_text_list(
                    query.question[0].name, 60, "IN", key[1], ZONE[key]
                )
            )
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    async def run(self, *, task_status: trio.TaskStatus[int]) -> None:
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with udp:
            await udp.bind((HOST, 0))
            self.port = udp.getsockname()[1]
            listeners = await trio.open_tcp_listeners(self.port, host=HOST)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(trio.serve_listeners, self.serve_tcp, listeners)
                )
                task_status.started(self.port)
                while True:
                    data, address = await udp.recvfrom(65535)
                    reply = self.answer(data, tcp=False)
                    if reply is not None:
                        await udp.sendto(reply, address)

    async def serve_tcp(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                chunk = await stream.receive_some()
                if not chunk:
                    return
                data += chunk
            self.tcp_queries += 1
            reply = self.answer(data[2:], tcp=True)
            assert reply is not None
            await stream.send_all(frame(reply))


async def test_forwarder_relays_to_a_udp_dns_server() -> None:
    upstream = UpstreamDns()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(upstream.run)
            forwarder = UdpForwarder(f"{HOST}:{port}", timeout=0.5, attempts=3)
            async with running(forwarder) as server:
                answers = {}
                for name in ["www", "tc", "slow", "nope"]:
                    query = dns.message.make_query(f"{name}.example.test", "A")
                    answers[name] = await dnspython_query(server.port, query)
            nursery.cancel_scope.cancel()
    www = answers["www"]
    assert www.id == 0 and www.rcode() == dns.rcode.NOERROR
    assert sorted(rr.to_text() for rr in www.answer[0]) == ["192.0.2.1", "192.0.2.2"]
    # Truncated over UDP: asked again over TCP, the full answer relayed.
    assert not answers["tc"].flags & dns.flags.TC
    assert len(answers["tc"].answer[0]) == 2
    assert upstream.tcp_queries == 1
    # The first try was dropped: the retry got the (negative) answer.
    assert answers["slow"].rcode() == dns.rcode.NXDOMAIN
    assert upstream.seen["slow.example.test."] == 2
    assert answers["nope"].rcode() == dns.rcode.NXDOMAIN
    # Upstream never saw DoQ's ID 0: a random ID per attempt.
    assert len(upstream.ids) == 6
    assert len(set(upstream.ids)) >= 5 and 0 not in upstream.ids[:1]


async def test_forwarder_servfail_when_upstream_is_silent() -> None:
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with silent, trio.fail_after(30):
        await silent.bind((HOST, 0))  # bound, never answers
        forwarder = UdpForwarder(silent.getsockname(), timeout=0.2, attempts=2)
        async with running(forwarder) as server:
            start = trio.current_time()
            response = await dnspython_query(
                server.port, dns.message.make_query("www.example.test", "A")
            )
            elapsed = trio.current_time() - start
    assert response.rcode() == dns.rcode.SERVFAIL and response.id == 0
    assert 0.4 <= elapsed < 3
    assert forwarder.failures == 1


@pytest.mark.parametrize(
    ("upstream", "kwargs", "error"),
    [
        ("localhost", {}, ValueError),
        ("127.0.0.1:0", {}, ValueError),
        (("127.0.0.1", "53"), {}, TypeError),
        ("127.0.0.1:53", {"timeout": 0}, ValueError),
        ("127.0.0.1:53", {"attempts": 0}, ValueError),
        ("127.0.0.1:53", {"max_in_flight": "8"}, TypeError),
    ],
)
def test_forwarder_bad_arguments(upstream: Any, kwargs: Any, error: type) -> None:
    with pytest.raises(error):
        UdpForwarder(upstream, **kwargs)


# -- malformed queries (trioquic's raw QUIC client) ------------------------------------


async def test_malformed_queries_get_what_rfc_9250_says() -> None:
    keepalive = dns.message.make_query(
        "www.example.test",
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")],
    )
    keepalive.id = 0
    good = query_wire()
    nonzero = bytearray(good)
    nonzero[0:2] = (4660).to_bytes(2, "big")
    response_as_query = bytearray(good)
    response_as_query[2] |= 0x80  # QR
    with trio.fail_after(60):
        async with running() as server:
            port = server.port
            outcomes = {
                "non-zero id": await raw_exchange(port, frame(bytes(nonzero))),
                "garbage": await raw_exchange(
                    port, frame(b"\x00\x00\x01\x00\x00\x01" + b"\xff" * 20)
                ),
                "response as query": await raw_exchange(
                    port, frame(bytes(response_as_query))
                ),
                "short": await raw_exchange(port, (40).to_bytes(2, "big") + good[:20]),
                "trailing": await raw_exchange(port, frame(good) + b"\x00\x05hello"),
                "half prefix": await raw_exchange(port, b"\x00"),
                "tiny": await raw_exchange(port, frame(b"\x00\x00\x01")),
                "keepalive": await raw_exchange(port, frame(keepalive.to_wire())),
                "unidirectional": await raw_exchange(
                    port, frame(good), unidirectional=True
                ),
            }
            # The server still answers other connections.
            after = await dnspython_query(
                port, dns.message.make_query("www.example.test", "A")
            )
            stats = server.statistics()
    assert after.rcode() == dns.rcode.NOERROR
    assert_protocol_error(outcomes["non-zero id"], "Message ID is 4660")
    for name in ("garbage", "response as query"):
        formerr = outcomes[name].message()
        assert formerr.rcode() == dns.rcode.FORMERR and formerr.id == 0
        assert formerr.flags & dns.flags.QR
    assert_protocol_error(outcomes["short"], "ended after 20 bytes")
    assert_protocol_error(outcomes["trailing"], "more data after")
    assert_protocol_error(outcomes["half prefix"], "before the query's 2-byte")
    assert_protocol_error(outcomes["tiny"], "shorter than a DNS header")
    assert_protocol_error(outcomes["keepalive"], "edns-tcp-keepalive")
    assert_protocol_error(outcomes["unidirectional"], "unidirectional")
    assert stats.protocol_errors == 7 and stats.formerr == 2


async def test_query_without_fin_is_a_dangling_stream() -> None:
    settings = DoqSettings(query_timeout=0.3)
    with trio.fail_after(30):
        async with running(doq_settings=settings) as server:
            start = trio.current_time()
            outcome = await raw_exchange(server.port, frame(query_wire()), fin=False)
            elapsed = trio.current_time() - start
    assert_protocol_error(outcome, "no FIN")
    assert 0.3 <= elapsed < 3


# -- limits and handler failures -------------------------------------------------------


async def test_concurrent_queries_are_held_to_the_stream_limit() -> None:
    active = 0
    most = 0

    async def slow(query: dns.message.Message, context: QueryContext) -> Any:
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            await trio.sleep(0.1)
        finally:
            active -= 1
        return await zone_handler(query, context)

    replies: list[dns.message.Message] = []

    async def one(connection: trioquic.QuicConnection) -> None:
        stream = await connection.open_stream()
        await stream.send_all(frame(query_wire()))
        await stream.send_eof()
        outcome = RawOutcome()
        await read_all(stream, outcome)
        replies.append(outcome.message())

    with trio.fail_after(30):
        async with (
            running(slow, DoqSettings(max_concurrent_queries=2)) as server,
            trioquic.open_quic_connection(
                HOST, server.port, settings=doq_client_settings()
            ) as connection,
            trio.open_nursery() as nursery,
        ):
            for _ in range(6):
                nursery.start_soon(one, connection)
    # The client waited for stream credit: never more than 2 at once, all
    # answered, and no error.
    assert most == 2
    assert len(replies) == 6
    assert all(r.rcode() == dns.rcode.NOERROR for r in replies)


async def test_too_large_query_is_refused_on_its_stream() -> None:
    big = query_wire("a" * 60 + ".example.test")
    with trio.fail_after(30):
        async with running(doq_settings=DoqSettings(max_query_size=64)) as server:
            async with trioquic.open_quic_connection(
                HOST, server.port, settings=doq_client_settings()
            ) as connection:
                stream = await connection.open_stream()
                await stream.send_all(frame(big))
                await stream.send_eof()
                refused = RawOutcome()
                await read_all(stream, refused)
                # The connection goes on.
                stream = await connection.open_stream()
                await stream.send_all(frame(query_wire()))
                await stream.send_eof()
                fine = RawOutcome()
                await read_all(stream, fine)
            stats = server.statistics()
    assert len(big) > 64
    assert refused.reset_code == DoqErrorCode.DOQ_EXCESSIVE_LOAD
    assert fine.message().rcode() == dns.rcode.NOERROR
    assert stats.too_large == 1


async def test_handler_failures_answer_servfail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(query: dns.message.Message, context: QueryContext) -> Any:
        label = query.question[0].name.labels[0]
        if label == b"raise":
            raise RuntimeError("boom")
        if label == b"slow":
            await trio.sleep_forever()
        if label == b"wrong":
            return "not a message"
        if label == b"huge":
            response = dns.message.make_response(query)
            response.answer.append(
                dns.rrset.from_text_list(
                    query.question[0].name,
                    1,
                    "IN",
                    "TXT",
                    [f'"{i} {"y" * 250}"' for i in range(300)],
                )
            )
            return response
        return await zone_handler(query, context)

    caplog.set_level(logging.WARNING, logger="trioquic.doq")
    settings = DoqSettings(handler_timeout=0.3)
    results = {}
    with trio.fail_after(30):
        async with running(handler, settings) as server:
            for label in ["raise", "slow", "wrong", "huge", "www"]:
                query = dns.message.make_query(f"{label}.example.test", "A")
                results[label] = await dnspython_query(server.port, query)
            stats = server.statistics()
    for label in ["raise", "slow", "wrong", "huge"]:
        assert results[label].rcode() == dns.rcode.SERVFAIL, label
        assert results[label].question == [results[label].question[0]]
    assert results["www"].rcode() == dns.rcode.NOERROR
    assert stats.servfail == 4 and stats.handler_timeouts == 1
    messages = caplog.text
    assert "boom" in messages and "longer than 0.3 s" in messages
    assert "returned str" in messages


async def test_client_cancels_a_query() -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def handler(query: dns.message.Message, context: QueryContext) -> Any:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    with trio.fail_after(30):
        async with running(handler) as server:
            async with trioquic.open_quic_connection(
                HOST, server.port, settings=doq_client_settings()
            ) as connection:
                stream = await connection.open_stream()
                await stream.send_all(frame(query_wire()))
                await stream.send_eof()
                await started.wait()
                stream.stop_sending(DoqErrorCode.DOQ_REQUEST_CANCELLED)
                await cancelled.wait()
                # The connection goes on.
                assert (await raw_exchange(server.port, frame(query_wire()))).data
            stats = server.statistics()
    assert stats.cancelled == 1 and server.queries_in_progress == 0


# -- 0-RTT -----------------------------------------------------------------------------


def update_wire() -> bytes:
    update = dns.update.UpdateMessage("example.test")
    update.add("new.example.test", 60, "A", "192.0.2.9")
    update.id = 0
    return update.to_wire()


@pytest.mark.parametrize("policy", ["refuse", "defer"])
async def test_zero_rtt_only_replayable_queries_run_early(policy: str) -> None:
    seen: list[tuple[int, bool]] = []

    async def handler(query: dns.message.Message, context: QueryContext) -> Any:
        seen.append((query.opcode(), context.early_data))
        if query.opcode() == dns.opcode.UPDATE:
            return dns.message.make_response(query)
        return await zone_handler(query, context)

    async def exchange(connection: trioquic.QuicConnection, wire: bytes) -> RawOutcome:
        stream = await connection.open_stream()
        await stream.send_all(frame(wire))
        await stream.send_eof()
        outcome = RawOutcome()
        await read_all(stream, outcome)
        return outcome

    with trio.fail_after(30):
        async with running(handler, DoqSettings(early_data=policy)) as server:
            async with trioquic.open_quic_connection(
                HOST, server.port, settings=doq_client_settings()
            ) as first:
                await exchange(first, query_wire())
                await trio.sleep(0.2)  # the ticket follows the handshake
                ticket = first.session_ticket
            assert ticket is not None
            early = doq_client_settings(session_ticket=ticket, zero_rtt=True)
            async with trioquic.open_quic_connection(
                HOST, server.port, settings=early
            ) as connection:
                assert connection.handshake is None  # sending 0-RTT
                async with trio.open_nursery() as nursery:
                    results: dict[str, RawOutcome] = {}

                    async def run(name: str, wire: bytes) -> None:
                        results[name] = await exchange(connection, wire)

                    nursery.start_soon(run, "query", query_wire())
                    nursery.start_soon(run, "update", update_wire())
                info = await connection.wait_handshake()
            stats = server.statistics()
    assert info.early_data_accepted
    assert results["query"].message().rcode() == dns.rcode.NOERROR
    update = results["update"].message()
    assert (dns.opcode.QUERY, True) in seen  # the QUERY ran early
    if policy == "refuse":
        assert update.rcode() == dns.rcode.REFUSED
        codes = [o.code for o in update.options if isinstance(o, dns.edns.EDEOption)]
        assert codes == [dns.edns.EDECode.TOO_EARLY]
        assert all(opcode != dns.opcode.UPDATE for opcode, _ in seen)
        assert stats.early_refused == 1
    else:
        assert update.rcode() == dns.rcode.NOERROR
        assert (dns.opcode.UPDATE, False) in seen  # after the handshake
        assert stats.early_deferred == 1


# -- shutdown and arguments ------------------------------------------------------------


async def test_graceful_shutdown_answers_then_closes_with_doq_no_error() -> None:
    started = trio.Event()

    async def slow(query: dns.message.Message, context: QueryContext) -> Any:
        started.set()
        await trio.sleep(0.3)
        return await zone_handler(query, context)

    stop = trio.Event()

    async def run_server(*, task_status: trio.TaskStatus[DoqServer]) -> None:
        async with trio.open_nursery() as inner:
            server = await inner.start(
                functools.partial(
                    serve_doq, slow, 0, host=HOST, settings=server_settings()
                )
            )
            task_status.started(server)
            await stop.wait()
            inner.cancel_scope.cancel()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(run_server)
            async with trioquic.open_quic_connection(
                HOST, server.port, settings=doq_client_settings()
            ) as connection:
                stream = await connection.open_stream()
                await stream.send_all(frame(query_wire()))
                await stream.send_eof()
                await started.wait()
                stop.set()  # stop the server now
                answer = RawOutcome()
                await read_all(stream, answer)
                closed = await connection.wait_closed()
    assert answer.message().rcode() == dns.rcode.NOERROR
    reason = closed.reason
    assert reason.by_peer and not reason.is_transport
    assert reason.error_code == DoqErrorCode.DOQ_NO_ERROR


async def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="handler"):
        await serve_doq(None, 0, settings=server_settings())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="certificate"):
        await serve_doq(zone_handler, 0)
    with pytest.raises(ValueError, match="certificate"):
        await serve_doq(zone_handler, 0, settings=trioquic.QuicSettings())
    with pytest.raises(TypeError, match="DoqSettings"):
        await serve_doq(zone_handler, 0, settings=server_settings(), doq_settings={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_query_size"):
        DoqSettings(max_query_size=70000)
    with pytest.raises(ValueError, match="early_data"):
        DoqSettings(early_data="accept")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrent_queries"):
        DoqSettings(max_concurrent_queries=0)
    with pytest.raises(TypeError, match="handler_timeout"):
        DoqSettings(handler_timeout="5")  # type: ignore[arg-type]


async def test_trioquic_client_query() -> None:
    with trio.fail_after(30):
        async with running() as server:
            query = dns.message.make_query("www.example.test", "AAAA")
            query.id = secrets.randbelow(0xFFFF) + 1
            response = await trioquic.doq.query(
                query, HOST, server.port, settings=client_settings()
            )
    assert response.rcode() == dns.rcode.NOERROR and response.id == 0
    assert [rr.to_text() for rr in response.answer[0]] == ["2001:db8::1"]
    assert query.id != 0  # the caller's message is left as it was
