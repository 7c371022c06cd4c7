"""A real browser finds HTTP/3 by itself.

Headless Chromium loads a page from :func:`trioquic.serve_http` over TCP
(HTTP/2 or HTTP/1.1), sees the ``alt-svc: h3=":PORT"; ma=86400`` header, and
loads the next pages of the same origin over HTTP/3, with no flag that forces
QUIC on that origin.

The browser is driven over the Chrome DevTools Protocol (its WebSocket,
spoken here with wsproto over trio). Which protocol carried each page is
checked from both sides: the browser's own record
(``performance.getEntriesByType("navigation")[0].nextHopProtocol`` and the
DevTools ``Network.responseReceived`` event's ``protocol``) and the server's
(the handler writes ``request.http_version`` into the page and a list).

Chromium's flags, and why each is needed, are in :func:`chromium_flags`
and in ``docs/testing.rst``. The tests skip when Chromium is not installed
(``apt-get install chromium``; ``TRIOQUIC_CHROMIUM`` names another binary).
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

import trioquic
from trioquic import HttpRequest, QuicSettings
from trioquic.testing import development_certificate

CHROMIUM = (
    os.environ.get("TRIOQUIC_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or shutil.which("google-chrome")
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Chromium (apt-get install chromium)"
    ),
]

#: Seconds for Chromium to start and open its DevTools endpoint.
STARTUP_TIMEOUT = 30
#: Seconds for one page to load.
LOAD_TIMEOUT = 15
#: Navigations allowed for the browser to move to HTTP/3 after the first.
#: Chromium races QUIC against TCP once it knows the Alt-Svc; over
#: HTTP/1.1 it took one in every run seen, over HTTP/2 (whose connection it
#: may reuse while QUIC connects) one or two.
MAX_NAVIGATIONS = 8

#: Seconds for a whole test (a run takes about two; under pytest's
#: faulthandler_timeout).
TEST_TIMEOUT = 90

#: nextHopProtocol / DevTools ``protocol`` -> the server's ``http_version``.
VERSIONS = {"h3": "3", "h2": "2", "http/1.1": "1.1"}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>trioquic</title></head>
<body data-version="{version}"><p>Served over HTTP/{version}.</p></body></html>
"""


def chromium_flags(
    profile: pathlib.Path, spki_sha256: str, *, force_quic_on: str
) -> list[str]:
    """The command line flags a test runs Chromium with."""
    flags = [
        "--headless",
        # A fresh profile per test: no Alt-Svc or broken-QUIC marks
        # remembered from another run (Chromium keeps both in the profile).
        f"--user-data-dir={profile}",
        # DevTools on a free port; Chromium writes it to DevToolsActivePort.
        "--remote-debugging-port=0",
        "--no-first-run",
        "--no-default-browser-check",
        # No traffic of Chromium's own (updates, safe browsing) during a test.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-gpu",
        # Trust the development certificate, by its public key, for TCP and
        # for QUIC. Plain --ignore-certificate-errors is not enough: QUIC
        # connections then still fail (ERR_QUIC_PROTOCOL_ERROR).
        f"--ignore-certificate-errors-spki-list={spki_sha256}",
        # Chromium's QUIC refuses a certificate that does not chain to a root
        # built into Chromium (ERR_QUIC_CERT_ROOT_NOT_KNOWN, the TLS alert
        # 46 "certificate unknown"), whatever trusts it otherwise, except
        # for the hosts named by --origin-to-force-quic-on. Naming the
        # server's host with ANOTHER port lets QUIC accept the development
        # certificate for that host, while the origin under test still has
        # to discover HTTP/3 through Alt-Svc (its first page comes over TCP,
        # which the test asserts). Naming the origin itself forces QUIC from
        # the first request instead (the second test).
        f"--origin-to-force-quic-on={force_quic_on}",
        # Chromium's sandbox refuses to run as root and needs user namespaces
        # or a setuid helper, which containers often lack; the browser loads
        # nothing but the test's own pages.
        "--no-sandbox",
        # Containers give /dev/shm 64 MB, too little for Chromium: use /tmp.
        "--disable-dev-shm-usage",
    ]
    return flags


class DevTools:
    """A small Chrome DevTools Protocol client over one WebSocket: commands
    with :meth:`call`, events with :meth:`event` (kept in :attr:`events`
    until taken)."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._ids = itertools.count(1)
        self._text: list[str] = []
        #: Events received and not yet taken by :meth:`event`.
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int, path: str) -> DevTools:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=path)))
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("DevTools closed the connection in the handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(stream, ws)
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"DevTools refused: {event.status_code}")

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def _receive(self) -> dict[str, Any]:
        while True:
            for event in self._ws.events():
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        message: dict[str, Any] = json.loads("".join(self._text))
                        self._text.clear()
                        return message
                elif isinstance(event, Ping):
                    await self._stream.send_all(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise ConnectionError("DevTools closed the connection")
            data = await self._stream.receive_some(1 << 20)
            if not data:
                raise ConnectionError("DevTools closed the connection")
            self._ws.receive_data(data)

    async def call(
        self, method: str, session: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """Send a command (to a target's ``session``, or to the browser) and
        return its result."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._stream.send_all(
            self._ws.send(TextMessage(data=json.dumps(message)))
        )
        while True:
            reply = await self._receive()
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
            if "method" in reply:
                self.events.append(reply)

    async def event(
        self,
        method: str,
        session: str,
        where: Callable[[dict[str, Any]], bool] = lambda params: True,
    ) -> dict[str, Any]:
        """Wait for the first event ``method`` of ``session`` whose params
        satisfy ``where``, and return its params."""

        def matches(message: dict[str, Any]) -> bool:
            return (
                message.get("method") == method
                and message.get("sessionId") == session
                and where(message.get("params", {}))
            )

        for index, message in enumerate(self.events):
            if matches(message):
                del self.events[index]
                params: dict[str, Any] = message.get("params", {})
                return params
        while True:
            message = await self._receive()
            if matches(message):
                params = message.get("params", {})
                return params
            if "method" in message:
                self.events.append(message)


def _stop_group(process: trio.Process) -> None:
    # Chromium runs in a session of its own (start_new_session): its
    # zygote, renderer and utility processes share the group.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@asynccontextmanager
async def open_chromium(
    flags: list[str], profile: pathlib.Path, log: pathlib.Path
) -> AsyncIterator[DevTools]:
    """Start Chromium, connect to its DevTools endpoint; on exit stop it
    and every process it started, whatever happened."""
    assert CHROMIUM is not None
    await trio.Path(profile).mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            [CHROMIUM, *flags, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    devtools: DevTools | None = None
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            active = trio.Path(profile / "DevToolsActivePort")
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"Chromium exited with {process.returncode}")
                lines = (
                    (await active.read_text()).splitlines()
                    if await active.exists()
                    else []
                )
                if len(lines) >= 2:
                    break
                await trio.sleep(0.05)
            devtools = await DevTools.connect(int(lines[0]), lines[1])
        yield devtools
    except BaseException:
        # Shown with the failure (pytest prints a failing test's output).
        with trio.CancelScope(shield=True):
            tail = (await trio.Path(log).read_text(errors="replace"))[-4000:]
        print(f"--- Chromium's output (end) ---\n{tail}")
        raise
    finally:
        with trio.CancelScope(shield=True):
            if devtools is not None:
                await devtools.aclose()
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with trio.move_on_after(5):
                    await process.wait()
            _stop_group(process)
            await process.wait()


class Page:
    """One browser tab, attached over DevTools with the Page, Network and
    lifecycle events on."""

    def __init__(self, devtools: DevTools, session: str) -> None:
        self.devtools = devtools
        self.session = session

    @classmethod
    async def open(cls, devtools: DevTools) -> Page:
        target = await devtools.call("Target.createTarget", url="about:blank")
        attached = await devtools.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = cls(devtools, attached["sessionId"])
        await devtools.call("Page.enable", page.session)
        await devtools.call(
            "Page.setLifecycleEventsEnabled", page.session, enabled=True
        )
        await devtools.call("Network.enable", page.session)
        # Every navigation must reach the server: no HTTP cache.
        await devtools.call(
            "Network.setCacheDisabled", page.session, cacheDisabled=True
        )
        return page

    async def load(self, url: str) -> dict[str, Any]:
        """Navigate to ``url``, wait for its load event, and return what
        the browser says of it: ``protocol`` (nextHopProtocol),
        ``version`` (what the server wrote into the page), ``response``
        (DevTools' record of the document's response: ``protocol``,
        ``headers``, ``status``)."""
        devtools, session = self.devtools, self.session
        with trio.fail_after(LOAD_TIMEOUT):
            navigation = await devtools.call("Page.navigate", session, url=url)
            assert "errorText" not in navigation, (url, navigation)
            loader = navigation["loaderId"]
            received = await devtools.event(
                "Network.responseReceived",
                session,
                lambda params: (
                    params.get("loaderId") == loader
                    and params.get("type") == "Document"
                ),
            )
            await devtools.event(
                "Page.lifecycleEvent",
                session,
                lambda params: (
                    params.get("loaderId") == loader and params.get("name") == "load"
                ),
            )
            evaluated = await devtools.call(
                "Runtime.evaluate",
                session,
                expression=(
                    "[performance.getEntriesByType('navigation')[0].nextHopProtocol,"
                    " document.body.dataset.version, location.href]"
                ),
                returnByValue=True,
            )
        protocol, version, href = evaluated["result"]["value"]
        assert href == url
        return {
            "protocol": protocol,
            "version": version,
            "response": received["response"],
        }


def _settings() -> QuicSettings:
    certificate = development_certificate()
    return QuicSettings(
        certificate=str(certificate.certificate_path),
        private_key=str(certificate.private_key_path),
    )


def _recording_handler(
    served: list[tuple[str, str]],
) -> Callable[[HttpRequest], Any]:
    async def handler(request: HttpRequest) -> None:
        if not request.path.startswith("/page/"):
            await request.respond(404, [("content-type", "text/plain")], b"not here\n")
            return
        served.append((request.path, request.http_version))
        body = PAGE.format(version=request.http_version).encode()
        await request.respond(
            200,
            [
                ("content-type", "text/html; charset=utf-8"),
                ("cache-control", "no-store"),
            ],
            body,
        )

    return handler


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


async def test_page_over_tcp_then_http3_after_alt_svc(tmp_path: pathlib.Path) -> None:
    served: list[tuple[str, str]] = []
    certificate = development_certificate()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: trioquic.serve_http(
                    _recording_handler(served),
                    0,
                    host="127.0.0.1",
                    settings=_settings(),
                    tcp=True,
                    alt_svc=True,
                    task_status=task_status,
                )
            )
            port = server.port
            origin = f"https://127.0.0.1:{port}"
            # Another port of the same host: see chromium_flags. Port 1 is
            # never the server's (it binds an ephemeral port).
            flags = chromium_flags(
                tmp_path / "profile",
                certificate.spki_sha256,
                force_quic_on="127.0.0.1:1",
            )
            async with open_chromium(
                flags, tmp_path / "profile", tmp_path / "chromium.log"
            ) as devtools:
                page = await Page.open(devtools)

                # The first page: TCP, and the server offers HTTP/3.
                first = await page.load(f"{origin}/page/0")
                assert first["protocol"] in ("h2", "http/1.1"), first
                assert first["response"]["protocol"] == first["protocol"]
                assert first["version"] == VERSIONS[first["protocol"]]
                assert served == [("/page/0", VERSIONS[first["protocol"]])]
                alt_svc = _header(first["response"]["headers"], "alt-svc")
                assert alt_svc == f'h3=":{port}"; ma=86400', first["response"][
                    "headers"
                ]

                # Later pages of the same origin: HTTP/3, once Chromium has
                # connected over QUIC (it races QUIC against TCP).
                loads = [first]
                for number in range(1, MAX_NAVIGATIONS + 1):
                    loaded = await page.load(f"{origin}/page/{number}")
                    loads.append(loaded)
                    # Browser and server agree on every page's protocol.
                    assert loaded["response"]["protocol"] == loaded["protocol"]
                    assert loaded["version"] == VERSIONS[loaded["protocol"]]
                    assert served[-1] == (f"/page/{number}", loaded["version"])
                    if loaded["protocol"] == "h3":
                        break
                protocols = [load["protocol"] for load in loads]
                print("protocols of the pages, in order:", protocols)
                assert protocols[-1] == "h3", (
                    f"Chromium never moved to HTTP/3 after {MAX_NAVIGATIONS} "
                    f"navigations: {protocols}"
                )
                # HTTP/3 responses carry the Alt-Svc too.
                alt_svc = _header(loads[-1]["response"]["headers"], "alt-svc")
                assert alt_svc == f'h3=":{port}"; ma=86400'

                # And it stays there: the next page comes over HTTP/3 as well.
                again = await page.load(f"{origin}/page/again")
                assert again["protocol"] == "h3", again
                assert served[-1] == ("/page/again", "3")
                assert len(served) == len(loads) + 1
            nursery.cancel_scope.cancel()


async def test_page_over_forced_http3(tmp_path: pathlib.Path) -> None:
    # With the origin itself in --origin-to-force-quic-on, Chromium speaks
    # HTTP/3 from the first request (no TCP at all): HTTP/3 alone works.
    served: list[tuple[str, str]] = []
    certificate = development_certificate()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: trioquic.serve_http(
                    _recording_handler(served),
                    0,
                    host="127.0.0.1",
                    settings=_settings(),
                    tcp=True,
                    alt_svc=True,
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
                page = await Page.open(devtools)
                loaded = await page.load(f"https://127.0.0.1:{port}/page/forced")
                assert loaded["protocol"] == "h3", loaded
                assert loaded["response"]["protocol"] == "h3"
                assert loaded["version"] == "3"
                assert served == [("/page/forced", "3")]
            nursery.cancel_scope.cancel()


@pytest.fixture
def cli_with_tcp_door() -> None:
    """Skip unless ``trioquic serve`` has its TCP door (``--no-tcp``)."""
    if not _cli_has_tcp_door():
        pytest.skip("trioquic serve has no TCP door (no --no-tcp option)")


def _cli_has_tcp_door() -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "trioquic", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--no-tcp" in result.stdout


async def _read_until(
    stream: trio.abc.ReceiveStream, pattern: re.Pattern[str]
) -> re.Match[str]:
    seen = b""
    while True:
        match = pattern.search(seen.decode(errors="replace"))
        if match is not None:
            return match
        data = await stream.receive_some(65536)
        if not data:
            raise RuntimeError(
                f"the server's output ended: {seen.decode(errors='replace')}"
            )
        seen += data


async def test_trioquic_serve_root_over_tcp_then_http3(
    tmp_path: pathlib.Path, cli_with_tcp_door: None
) -> None:
    # The command line: `trioquic serve --root DIR` listens on TCP and UDP by
    # default, and a browser moves to HTTP/3 by itself.
    certificate = development_certificate()
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(
        "<!doctype html><html><body><p id=greeting>hello from trioquic serve</p>"
        "</body></html>"
    )
    (root / "other.html").write_text(
        "<!doctype html><html><body><p id=greeting>another page</p></body></html>"
    )
    command = [
        sys.executable,
        "-m",
        "trioquic",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--root",
        str(root),
        "--certificate",
        str(certificate.certificate_path),
        "--private-key",
        str(certificate.private_key_path),
    ]
    with (tmp_path / "server.log").open("wb") as server_log:
        server = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=server_log
        )
    try:
        with trio.fail_after(TEST_TIMEOUT):
            assert server.stdout is not None
            # The flags are the ones the command prints for Chromium: what
            # it tells users must work.
            printed = await _read_until(
                server.stdout,
                re.compile(
                    r"URL: (https://\S+:(\d+))/\n.*"
                    r"in Chromium: chromium "
                    r"--ignore-certificate-errors-spki-list=(\S+) "
                    r"--origin-to-force-quic-on=(\S+) (\S+)\n",
                    re.S,
                ),
            )
            origin, port = printed[1], int(printed[2])
            assert printed[3] == certificate.spki_sha256
            assert printed[4] != f"127.0.0.1:{port}"  # not forced: Alt-Svc
            assert printed[5] == f"{origin}/"
            flags = chromium_flags(
                tmp_path / "profile", printed[3], force_quic_on=printed[4]
            )
            async with open_chromium(
                flags, tmp_path / "profile", tmp_path / "chromium.log"
            ) as devtools:
                page = await Page.open(devtools)
                first = await page.load(f"{origin}/")
                assert first["protocol"] in ("h2", "http/1.1"), first
                assert first["response"]["status"] == 200
                alt_svc = _header(first["response"]["headers"], "alt-svc")
                assert alt_svc == f'h3=":{port}"; ma=86400', first["response"][
                    "headers"
                ]
                protocols = [first["protocol"]]
                for _ in range(MAX_NAVIGATIONS):
                    loaded = await page.load(f"{origin}/other.html")
                    assert loaded["response"]["status"] == 200
                    assert loaded["response"]["protocol"] == loaded["protocol"]
                    protocols.append(loaded["protocol"])
                    if loaded["protocol"] == "h3":
                        break
                print("protocols of the pages, in order:", protocols)
                assert protocols[-1] == "h3", protocols
                text = await devtools.call(
                    "Runtime.evaluate",
                    page.session,
                    expression="document.getElementById('greeting').textContent",
                    returnByValue=True,
                )
                assert text["result"]["value"] == "another page"
    finally:
        with trio.CancelScope(shield=True):
            if server.poll() is None:
                # Ctrl-C: the server stops gracefully.
                server.send_signal(signal.SIGINT)
                with trio.move_on_after(10):
                    await server.wait()
            if server.poll() is None:
                server.kill()
            await server.wait()
            if server.stdout is not None:
                await server.stdout.aclose()
