"""A real browser speaks WebTransport to trioquic.

Headless Chromium loads a page from :func:`trioquic.webtransport.serve_webtransport`
(over HTTP/3: the origin is forced onto QUIC) whose script opens
WebTransport sessions to the same server and:

* echoes a bidirectional stream, a unidirectional stream and datagrams;
* closes the session with a code and a reason, which the server sees;
* sees the server close a session with its own code and reason;
* resets a stream with a WebTransport error code, which the server sees
  mapped back from the HTTP/3 error space.

The script's report comes back through the DevTools protocol
(``Runtime.evaluate`` awaiting the page's promise); the test checks it, and
what the server saw. Chromium's harness (flags, DevTools client) is
``tests/test_browser.py``'s. Skips when Chromium is not installed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import ssl
from typing import Any

import trio
from test_browser import (  # the shared Chromium harness
    CHROMIUM,
    Page,
    chromium_flags,
    open_chromium,
    pytestmark,
)

import trioquic
from trioquic import webtransport
from trioquic.h3 import Request
from trioquic.testing import development_certificate
from trioquic.webtransport import StreamResetError, WebTransportSession

__all__ = ["CHROMIUM", "pytestmark"]

#: Seconds for the whole test.
TEST_TIMEOUT = 90

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>trioquic WebTransport</title></head>
<body><pre id="out">running</pre><script>
const enc = (text) => new TextEncoder().encode(text);
const dec = (bytes) => new TextDecoder().decode(bytes);
async function readAll(readable) {
  const reader = readable.getReader();
  const parts = [];
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    parts.push(dec(value));
  }
  return parts.join("");
}
function timeout(ms) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), ms));
}
async function run() {
  const report = {};
  const wt = new WebTransport(location.origin + "/echo");
  await wt.ready;
  report.ready = true;

  const bidi = await wt.createBidirectionalStream();
  const writer = bidi.writable.getWriter();
  await writer.write(enc("hello from chromium, "));
  await writer.write(enc("bidirectional"));
  await writer.close();
  report.bidi = await readAll(bidi.readable);

  const uni = await wt.createUnidirectionalStream();
  const uniWriter = uni.getWriter();
  await uniWriter.write(enc("unidirectional from chromium"));
  await uniWriter.close();
  const incoming = wt.incomingUnidirectionalStreams.getReader();
  const {value: back} = await incoming.read();
  report.uni = await readAll(back);

  const datagramWriter = wt.datagrams.writable.getWriter();
  const datagramReader = wt.datagrams.readable.getReader();
  report.datagrams = [];
  for (let i = 0; i < 3; i++) {
    // Datagrams are unreliable: send again until the echo comes.
    for (let attempt = 0; ; attempt++) {
      await datagramWriter.write(enc("datagram " + i));
      try {
        const {value} = await Promise.race([datagramReader.read(), timeout(1000)]);
        report.datagrams.push(dec(value));
        break;
      } catch (error) {
        if (attempt >= 5) throw error;
      }
    }
  }

  wt.close({closeCode: 7, reason: "bye from chromium"});
  const closed = await wt.closed;
  report.closedByBrowser = {code: closed.closeCode, reason: closed.reason};

  const second = new WebTransport(location.origin + "/server-closes");
  await second.ready;
  const info = await Promise.race([second.closed, timeout(10000)]);
  report.closedByServer = {code: info.closeCode, reason: info.reason};

  const third = new WebTransport(location.origin + "/reset");
  await third.ready;
  const doomed = await third.createBidirectionalStream();
  const doomedWriter = doomed.writable.getWriter();
  await doomedWriter.write(enc("about to be reset"));
  await doomedWriter.abort(
    new WebTransportError({message: "reset", streamErrorCode: 5}));
  const verdict = await third.incomingUnidirectionalStreams.getReader().read();
  report.resetSeenByServer = await readAll(verdict.value);
  third.close();

  report.userAgent = navigator.userAgent;
  return report;
}
window.report = run().then(
  (report) => {
    document.getElementById("out").textContent = JSON.stringify(report);
    return report;
  },
  (error) => ({error: String(error), stack: error.stack}),
);
</script></body></html>
"""


async def test_chromium_webtransport_echo(tmp_path: pathlib.Path) -> None:
    certificate = development_certificate()
    seen: dict[str, Any] = {}

    async def handler(session: WebTransportSession) -> None:
        if session.path == "/echo":
            await echo_until_closed(session, seen)
        elif session.path == "/server-closes":
            session.close(42, "bye from trioquic")
        elif session.path == "/reset":
            stream = await session.accept_bidirectional_stream()
            try:
                while await stream.receive_some():
                    pass
                verdict = "not reset"
            except StreamResetError as exc:
                verdict = f"reset with code {exc.error_code}"
                seen["reset"] = (exc.error_code, exc.http3_error_code)
            out = await session.open_unidirectional_stream()
            await out.send_all(verdict.encode())
            await out.aclose()
            await session.wait_closed()

    async def page(request: Request) -> None:
        await request.respond(
            200, [("content-type", "text/html; charset=utf-8")], PAGE.encode()
        )

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: webtransport.serve_webtransport(
                    handler,
                    0,
                    host="127.0.0.1",
                    settings=trioquic.QuicSettings(
                        certificate=str(certificate.certificate_path),
                        private_key=str(certificate.private_key_path),
                    ),
                    fallback=page,
                    task_status=task_status,
                )
            )
            port = server.port
            flags = chromium_flags(
                tmp_path / "profile",
                certificate.spki_sha256,
                force_quic_on=f"127.0.0.1:{port}",
            )
            async with open_chromium(
                flags, tmp_path / "profile", tmp_path / "chromium.log"
            ) as devtools:
                tab = await Page.open(devtools)
                loaded = await tab.load(f"https://127.0.0.1:{port}/")
                assert loaded["protocol"] == "h3", loaded
                evaluated = await devtools.call(
                    "Runtime.evaluate",
                    tab.session,
                    expression="window.report",
                    awaitPromise=True,
                    returnByValue=True,
                )
            report = evaluated["result"]["value"]
            print("the page reported:", json.dumps(report, indent=1))
            assert "error" not in report, report
            assert report["ready"] is True
            assert report["bidi"] == "hello from chromium, bidirectional"
            assert report["uni"] == "unidirectional from chromium"
            assert report["datagrams"] == ["datagram 0", "datagram 1", "datagram 2"]
            assert report["closedByBrowser"] == {
                "code": 7,
                "reason": "bye from chromium",
            }
            assert report["closedByServer"] == {
                "code": 42,
                "reason": "bye from trioquic",
            }
            assert report["resetSeenByServer"] == "reset with code 5"
            # The server's side of it.
            print("the server saw:", seen)
            assert seen["closed"] == webtransport.SessionCloseInfo(
                7, "bye from chromium", by_peer=True
            )
            assert seen["reset"] == (5, webtransport.webtransport_code_to_http3(5))
            nursery.cancel_scope.cancel()


async def echo_until_closed(session: WebTransportSession, seen: dict[str, Any]) -> None:
    """Echo streams and datagrams until the browser closes the session;
    record how it closed."""

    async def echo_bidi(stream: webtransport.WebTransportStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async def echo_uni(stream: webtransport.WebTransportReceiveStream) -> None:
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        out = await session.open_unidirectional_stream()
        await out.send_all(data)
        await out.aclose()

    async def loop(nursery: trio.Nursery) -> None:
        async def bidi() -> None:
            while True:
                nursery.start_soon(
                    echo_bidi, await session.accept_bidirectional_stream()
                )

        async def uni() -> None:
            while True:
                nursery.start_soon(
                    echo_uni, await session.accept_unidirectional_stream()
                )

        async def datagrams() -> None:
            while True:
                await session.send_datagram(await session.receive_datagram())

        nursery.start_soon(bidi)
        nursery.start_soon(uni)
        nursery.start_soon(datagrams)
        seen["closed"] = await session.wait_closed()
        nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loop, nursery)
    except* webtransport.SessionClosed:
        pass


HASH_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><script>
window.report = (async () => {
  const value = Uint8Array.from("HASH".match(/../g), (hex) => parseInt(hex, 16));
  const wt = new WebTransport("URL", {
    serverCertificateHashes: [{algorithm: "sha-256", value}],
  });
  await wt.ready;
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  await writer.write(new TextEncoder().encode("trusted by its hash"));
  await writer.close();
  const {value: echoed} = await stream.readable.getReader().read();
  wt.close({closeCode: 0, reason: ""});
  return {secure: isSecureContext, echoed: new TextDecoder().decode(echoed)};
})().catch((error) => ({error: String(error)}));
</script></body></html>
"""


async def test_chromium_trusts_a_certificate_by_its_hash(
    tmp_path: pathlib.Path,
) -> None:
    """No certificate flags: the page (plain HTTP from 127.0.0.1, a secure
    context) gives the SHA-256 of the server certificate's DER in
    ``serverCertificateHashes``. Chromium accepts that only for an ECDSA
    certificate valid for at most 14 days in all, which the development
    certificate's default is."""
    certificate = trioquic.generate_self_signed_certificate(
        ["localhost", "127.0.0.1"], tmp_path / "cert"
    )
    der = ssl.PEM_cert_to_DER_cert(certificate.certificate_path.read_text())
    digest = hashlib.sha256(der).hexdigest()

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        await stream.send_all(data)
        await stream.send_eof()
        await session.wait_closed()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: webtransport.serve_webtransport(
                    handler,
                    0,
                    host="127.0.0.1",
                    settings=trioquic.QuicSettings(
                        certificate=str(certificate.certificate_path),
                        private_key=str(certificate.private_key_path),
                    ),
                    task_status=task_status,
                )
            )
            page = (
                HASH_PAGE.replace("HASH", digest)
                .replace("URL", f"https://127.0.0.1:{server.port}/echo")
                .encode()
            )

            async def plain_http(stream: trio.SocketStream) -> None:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    request += data
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n"
                    % len(page)
                    + page
                )
                await stream.aclose()

            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, plain_http, 0, host="127.0.0.1")
            )
            http_port = listeners[0].socket.getsockname()[1]
            flags = [
                flag
                for flag in chromium_flags(
                    tmp_path / "profile", "unused", force_quic_on="127.0.0.1:1"
                )
                if not flag.startswith(
                    ("--ignore-certificate-errors-spki-list", "--origin-to-force")
                )
            ]
            async with open_chromium(
                flags, tmp_path / "profile", tmp_path / "chromium.log"
            ) as devtools:
                tab = await Page.open(devtools)
                await tab.load(f"http://127.0.0.1:{http_port}/")
                evaluated = await devtools.call(
                    "Runtime.evaluate",
                    tab.session,
                    expression="window.report",
                    awaitPromise=True,
                    returnByValue=True,
                )
            report = evaluated["result"]["value"]
            print("the page reported:", report)
            assert report == {"secure": True, "echoed": "trusted by its hash"}
            nursery.cancel_scope.cancel()
