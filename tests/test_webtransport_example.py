"""examples/webtransport_echo.py runs as its header says: ``--demo`` (its
server and trioquic's client in one process), and its page in headless
Chromium opened with the command line the example prints."""

from __future__ import annotations

import pathlib
import re
import signal
import subprocess
import sys

import pytest
import trio
from test_browser import CHROMIUM, Page, chromium_flags, open_chromium

EXAMPLE = (
    pathlib.Path(__file__).resolve().parent.parent / "examples/webtransport_echo.py"
)


def test_demo_echoes_streams_and_datagrams() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert "bidirectional echo: hello over a bidirectional stream" in lines
    assert "unidirectional echo: hello over a unidirectional stream" in lines
    assert [line for line in lines if line.startswith("datagram echo")] == [
        "datagram echo: datagram 0",
        "datagram echo: datagram 1",
        "datagram echo: datagram 2",
    ]
    assert (
        "closed: SessionCloseInfo(code=0, reason='done', by_peer=False, clean=True)"
        in lines
    )
    # The server's handler saw the client's close.
    assert "session /echo closed: SessionCloseInfo(code=0, reason='done', " in (
        result.stderr
    )


async def _read_until(
    stream: trio.abc.ReceiveStream, pattern: re.Pattern[str]
) -> re.Match[str]:
    seen = b""
    while (match := pattern.search(seen.decode(errors="replace"))) is None:
        data = await stream.receive_some(65536)
        if not data:
            raise RuntimeError(f"the example's output ended: {seen!r}")
        seen += data
    return match


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (apt-get install chromium)"
)
async def test_page_in_chromium(tmp_path: pathlib.Path) -> None:
    server = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLE), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(90):
            assert server.stdout is not None
            printed = await _read_until(
                server.stdout,
                re.compile(
                    r"open it in Chromium: chromium "
                    r"--ignore-certificate-errors-spki-list=(\S+) "
                    r"--origin-to-force-quic-on=(\S+) (\S+)\n"
                ),
            )
            spki, forced, url = printed[1], printed[2], printed[3]
            flags = chromium_flags(tmp_path / "profile", spki, force_quic_on=forced)
            async with open_chromium(
                flags, tmp_path / "profile", tmp_path / "chromium.log"
            ) as devtools:
                page = await Page.open(devtools)
                loaded = await page.load(url)
                assert loaded["protocol"] == "h3"
                while True:
                    state = await devtools.call(
                        "Runtime.evaluate",
                        page.session,
                        expression=(
                            "[document.title,"
                            " document.getElementById('log').textContent]"
                        ),
                        returnByValue=True,
                    )
                    title, text = state["result"]["value"]
                    if title in ("done", "error"):
                        break
                    await trio.sleep(0.1)
            print("the page showed:\n" + text)
            assert title == "done", text
            assert text.splitlines() == [
                "session ready",
                "bidirectional echo: hello over a bidirectional stream",
                "unidirectional echo: hello over a unidirectional stream",
                "datagram echo: datagram 0",
                "datagram echo: datagram 1",
                "datagram echo: datagram 2",
                'closed: code 0, reason "done"',
            ]
    finally:
        with trio.CancelScope(shield=True):
            if server.poll() is None:
                server.send_signal(signal.SIGINT)
                with trio.move_on_after(10):
                    await server.wait()
            if server.poll() is None:
                server.kill()
            await server.wait()
            if server.stdout is not None:
                await server.stdout.aclose()
