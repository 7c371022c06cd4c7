"""A DNS over QUIC server (RFC 9250) answering a small zone through a handler
of your own, with ``trioquic.doq.serve_doq``.

What it shows: a DoQ handler is ``async def handler(query, context)``, taking
a dnspython message and returning one; the server does the wire work (one
query per QUIC stream, the 2-byte length prefix, Message ID 0, padding,
RFC 9250's error handling). ``context`` says who asked and whether the query
came in 0-RTT data.

How to run it (it needs dnspython: ``pip install 'trioquic[doq]'``)::

    python examples/doq_server.py --port 8853

It prints its certificate and a dnspython command line to query it, e.g.::

    python -c "import dns.message, dns.query; print(dns.query.quic(
        dns.message.make_query('www.example.test', 'A'), '127.0.0.1',
        port=8853, verify='/tmp/trioquic-XXXX/cert.pem',
        server_hostname='localhost'))"

Ctrl-C stops it: queries in progress are answered, then every connection is
closed with DOQ_NO_ERROR.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import signal
import sys
from collections.abc import Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

import trioquic
from trioquic.doq import QueryContext, serve_doq

ORIGIN = dns.name.from_text("example.test.")

#: The zone: (name, type) -> record data, all with a TTL of 300.
ZONE: dict[tuple[str, str], list[str]] = {
    ("example.test.", "SOA"): [
        "ns.example.test. admin.example.test. 1 7200 900 1209600 300"
    ],
    ("example.test.", "NS"): ["ns.example.test."],
    ("example.test.", "MX"): ["10 mail.example.test."],
    ("ns.example.test.", "A"): ["192.0.2.53"],
    ("www.example.test.", "A"): ["192.0.2.1", "192.0.2.2"],
    ("www.example.test.", "AAAA"): ["2001:db8::1"],
    ("mail.example.test.", "A"): ["192.0.2.25"],
    ("example.test.", "TXT"): ['"served over DNS over QUIC by trioquic"'],
}


def lookup(query: dns.message.Message) -> dns.message.Message:
    """The authoritative answer to ``query`` from ZONE (pure: easy to test)."""
    response = dns.message.make_response(query)
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    if not question.name.is_subdomain(ORIGIN):
        response.set_rcode(dns.rcode.REFUSED)  # not our zone
        return response
    response.flags |= dns.flags.AA
    name = question.name.to_text().lower()
    rdtype = dns.rdatatype.to_text(question.rdtype)
    records = ZONE.get((name, rdtype))
    if records:
        response.answer.append(
            dns.rrset.from_text_list(question.name, 300, "IN", rdtype, records)
        )
        return response
    if not any(known == name for known, _ in ZONE):
        response.set_rcode(dns.rcode.NXDOMAIN)
    # NXDOMAIN or "no data": the SOA tells resolvers how long to cache that.
    soa = ZONE[("example.test.", "SOA")]
    response.authority.append(dns.rrset.from_text_list(ORIGIN, 300, "IN", "SOA", soa))
    return response


async def handler(
    query: dns.message.Message, context: QueryContext
) -> dns.message.Message:
    question = query.question[0] if query.question else None
    early = " (0-RTT)" if context.early_data else ""
    print(f"query from {context.peer_address[0]}{early}: {question}", flush=True)
    return lookup(query)


def query_command(host: str, port: int, ca_certs: str) -> str:
    code = (
        "import dns.message, dns.query; "
        "print(dns.query.quic(dns.message.make_query('www.example.test', 'A'), "
        f"{host!r}, port={port}, verify={ca_certs!r}, server_hostname='localhost'))"
    )
    return shlex.join([sys.executable, "-c", code])


async def serve(host: str, port: int) -> None:
    cert = trioquic.generate_self_signed_certificate()
    settings = trioquic.QuicSettings(
        certificate=str(cert.certificate_path),
        private_key=str(cert.private_key_path),
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve_doq, handler, port, host=host, settings=settings
                )
            )
            print(f"DoQ server listening on {host}:{server.port}")
            print(f"certificate: {cert.certificate_path}")
            print(
                "query it with: "
                + query_command(host, server.port, str(cert.certificate_path))
            )
            print("press Ctrl-C to stop", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    print(f"stopped after {server.statistics().responses} responses", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="trioquic DNS over QUIC example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=8853, help="UDP port (default 8853; 853 needs root)"
    )
    args = parser.parse_args(argv)
    trio.run(serve, args.host, args.port)


if __name__ == "__main__":
    main()
