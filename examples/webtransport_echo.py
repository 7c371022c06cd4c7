"""A WebTransport echo server, and the page that talks to it from Chromium.

What it shows: :func:`trioquic.webtransport.serve_webtransport` running one
handler per session, which echoes

* every bidirectional stream the browser opens, on the same stream;
* every unidirectional stream, on a new unidirectional stream of its own;
* every datagram;

until the browser closes the session (the handler logs the code and reason).
Requests that are not WebTransport get the page ``webtransport_echo.html``
(the ``fallback`` handler), so one port serves both.

How to run it (from the repository root, with trioquic installed)::

    python examples/webtransport_echo.py --port 4433

It prints the URL and the Chromium command that opens it: the flags trust
the generated development certificate (by its public key) and put the
origin on QUIC from the first request; the page then opens
``new WebTransport(location.origin + "/echo")`` and shows the echoes.

``--demo`` runs the server and trioquic's own WebTransport client
(:func:`trioquic.webtransport.open_webtransport_session`) in one process,
and prints what comes back.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib

import trio

import trioquic
from trioquic import webtransport
from trioquic.h3 import Request

PAGE = pathlib.Path(__file__).with_name("webtransport_echo.html")
log = logging.getLogger("webtransport_echo")


async def echo(session: webtransport.WebTransportSession) -> None:
    """Echo the session's streams and datagrams until it ends."""

    async def echo_bidirectional(stream: webtransport.WebTransportStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async def echo_unidirectional(
        stream: webtransport.WebTransportReceiveStream,
    ) -> None:
        reply = await session.open_unidirectional_stream()
        while data := await stream.receive_some():
            await reply.send_all(data)
        await reply.aclose()

    async def serve(nursery: trio.Nursery) -> None:
        async def bidirectional() -> None:
            while True:
                stream = await session.accept_bidirectional_stream()
                nursery.start_soon(echo_bidirectional, stream)

        async def unidirectional() -> None:
            while True:
                stream = await session.accept_unidirectional_stream()
                nursery.start_soon(echo_unidirectional, stream)

        async def datagrams() -> None:
            while True:
                await session.send_datagram(await session.receive_datagram())

        nursery.start_soon(bidirectional)
        nursery.start_soon(unidirectional)
        nursery.start_soon(datagrams)
        info = await session.wait_closed()
        log.info("session %s closed: %s", session.path, info)
        nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, nursery)
    except* (webtransport.SessionClosed, trioquic.ConnectionClosed):
        pass  # the session or the connection ended under a stream


async def page(request: Request) -> None:
    if request.path in ("/", "/index.html"):
        await request.respond(
            200, [("content-type", "text/html; charset=utf-8")], PAGE.read_bytes()
        )
    else:
        await request.respond(404, [("content-type", "text/plain")], b"not found\n")


async def demo(port: int, settings: trioquic.QuicSettings, ca_certs: str) -> None:
    """trioquic's client against the server: the same echoes as the page."""
    client_settings = trioquic.QuicSettings(ca_certs=ca_certs, server_name="localhost")
    async with webtransport.open_webtransport_session(
        f"https://127.0.0.1:{port}/echo", settings=client_settings
    ) as session:
        stream = await session.open_bidirectional_stream()
        await stream.send_all(b"hello over a bidirectional stream")
        await stream.send_eof()
        reply = b""
        while data := await stream.receive_some():
            reply += data
        print("bidirectional echo:", reply.decode())
        out = await session.open_unidirectional_stream()
        await out.send_all(b"hello over a unidirectional stream")
        await out.aclose()
        back = await session.accept_unidirectional_stream()
        reply = b""
        while data := await back.receive_some():
            reply += data
        print("unidirectional echo:", reply.decode())
        for number in range(3):
            await session.send_datagram(b"datagram %d" % number)
            print("datagram echo:", (await session.receive_datagram()).decode())
        session.close(0, "done")
    print("closed:", session.close_info)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--demo", action="store_true", help="run a client too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)

    certificate = trioquic.generate_self_signed_certificate()
    settings = trioquic.QuicSettings(
        certificate=str(certificate.certificate_path),
        private_key=str(certificate.private_key_path),
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: webtransport.serve_webtransport(
                echo,
                args.port,
                host=args.host,
                settings=settings,
                paths=["/echo"],
                fallback=page,
                task_status=task_status,
            )
        )
        port = server.port
        origin = f"https://{args.host}:{port}"
        print(f"WebTransport echo on {origin}/echo, the page on {origin}/")
        print(
            "open it in Chromium: chromium "
            f"--ignore-certificate-errors-spki-list={certificate.spki_sha256} "
            f"--origin-to-force-quic-on={args.host}:{port} {origin}/",
            flush=True,
        )
        if args.demo:
            await demo(port, settings, str(certificate.certificate_path))
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
