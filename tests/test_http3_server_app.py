"""The built-in application of ``trioquic serve``: routing, path resolution
(traversal attempts), content types and ``/bytes/N`` limits as pure
functions; then end to end over loopback with the HTTP/3 client."""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
import trio

import trioquic
import trioquic.testing
from trioquic.cli._files import content_type

# private: the serve and get commands' own parts (routing, paths, content
# types, URL and header parsing, ordered output as pure functions, and the
# server serve runs); trioquic.cli exposes only main().
from trioquic.cli._get import OrderedOutput, output_name, parse_header, parse_url
from trioquic.cli._get import UsageError as GetUsageError
from trioquic.cli._serve import (
    CHUNK_SIZE,
    MAX_BYTES,
    HttpError,
    ServerConfig,
    index_page,
    parse_byte_count,
    pattern_bytes,
    pattern_chunks,
    resolve_path,
    route,
    run_server,
)
from trioquic.h3 import open_http3_client

TIMEOUT = 30.0


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>home</h1>")
    (site / "a.txt").write_text("hello")
    (site / "data.bin").write_bytes(os.urandom(3000))
    (site / "sub").mkdir()
    (site / "sub" / "index.html").write_text("sub home")
    (site / "sub" / "page one.css").write_text("body {}")
    (site / "empty").mkdir()
    (tmp_path / "secret.txt").write_text("top secret")
    (site / "escape").symlink_to(tmp_path / "secret.txt")
    (site / "escape-dir").symlink_to(tmp_path)
    (site / "inside-link").symlink_to(site / "a.txt")
    return site


def status_of(root: pathlib.Path, target: str) -> int:
    with pytest.raises(HttpError) as info:
        resolve_path(root, target)
    return info.value.status


# -- path resolution --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", "index.html"),
        ("/a.txt", "a.txt"),
        ("/a.txt?x=1#frag", "a.txt"),
        ("//a.txt", "a.txt"),
        ("/sub/", "sub/index.html"),
        ("/sub/page%20one.css", "sub/page one.css"),
        ("/inside-link", "a.txt"),
    ],
)
def test_resolve_path_finds_files(
    root: pathlib.Path, target: str, expected: str
) -> None:
    assert resolve_path(root, target) == (root / expected).resolve()


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/./a.txt",
        "/..",
        "/a.txt%00.html",
        "/..\\secret.txt",
        "/%ff",  # not UTF-8
        "a.txt",  # not absolute
        "",
        "*",
    ],
)
def test_resolve_path_rejects_traversal_and_malformed_paths(
    root: pathlib.Path, target: str
) -> None:
    assert status_of(root, target) == 400


@pytest.mark.parametrize("target", ["/escape", "/escape-dir/secret.txt"])
def test_resolve_path_rejects_links_leaving_the_root(
    root: pathlib.Path, target: str
) -> None:
    assert status_of(root, target) == 403


def test_absolute_filesystem_paths_stay_inside_the_root(
    root: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # "//etc/passwd" or "/<tmp>/secret.txt" name paths under the root, not
    # the file system's.
    assert status_of(root, "//etc/passwd") == 404
    assert status_of(root, str(tmp_path / "secret.txt")) == 404
    assert status_of(root, "/" + str(tmp_path / "secret.txt")) == 404


def test_resolve_path_missing_files(root: pathlib.Path) -> None:
    assert status_of(root, "/nope.txt") == 404
    assert status_of(root, "/a.txt/more") == 404


def test_directory_without_index_resolves_to_itself(root: pathlib.Path) -> None:
    # Listed by the application.
    assert resolve_path(root, "/empty/") == (root / "empty").resolve()
    assert route("GET", "/empty/", root).kind == "listing"
    assert route("HEAD", "/", root).kind == "file"  # it has an index.html


def test_directory_without_slash_redirects(root: pathlib.Path) -> None:
    with pytest.raises(HttpError) as info:
        resolve_path(root, "/sub?q=1")
    assert info.value.status == 301
    assert info.value.headers == [(b"location", b"/sub/?q=1")]


# -- routing ------------------------------------------------------------------------


def test_route_bytes_and_echo() -> None:
    decision = route("GET", "/bytes/1024", None)
    assert (decision.kind, decision.count) == ("bytes", 1024)
    assert route("HEAD", "/bytes/0?x", None).count == 0
    assert route("POST", "/echo", None).kind == "echo"


@pytest.mark.parametrize(
    ("method", "target", "status", "allow"),
    [
        ("POST", "/bytes/10", 405, b"GET, HEAD"),
        ("GET", "/echo", 405, b"POST"),
        ("PUT", "/", 405, b"GET, HEAD"),
        ("GET", "/nothing", 404, None),
        ("GET", "/bytes/", 400, None),
        ("GET", "/bytes/-1", 400, None),
        ("GET", "/bytes/1e3", 400, None),
        ("GET", "/bytes/0x10", 400, None),
        ("GET", f"/bytes/{MAX_BYTES + 1}", 400, None),
        ("GET", "/bytes/" + "9" * 40, 400, None),
    ],
)
def test_route_errors_without_root(
    method: str, target: str, status: int, allow: bytes | None
) -> None:
    with pytest.raises(HttpError) as info:
        route(method, target, None)
    assert info.value.status == status
    if allow is not None:
        assert (b"allow", allow) in info.value.headers


def test_route_index_without_root() -> None:
    assert route("GET", "/", None).kind == "index"
    assert route("HEAD", "/index.html", None).kind == "index"
    assert b"<h1>trioquic HTTP/3 server</h1>" in index_page(4433)


def test_route_files_with_root(root: pathlib.Path) -> None:
    decision = route("GET", "/a.txt", root)
    assert decision.kind == "file"
    assert decision.path == (root / "a.txt").resolve()
    with pytest.raises(HttpError) as info:
        route("DELETE", "/a.txt", root)
    assert info.value.status == 405
    with pytest.raises(HttpError) as info:
        route("GET", "/%2e%2e/secret.txt", root)
    assert info.value.status == 400
    # Built-in routes come first.
    assert route("GET", "/bytes/5", root).kind == "bytes"


# -- content types and /bytes ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("image.png", "image/png"),
        ("data.json", "application/json; charset=utf-8"),
        ("icon.svg", "image/svg+xml; charset=utf-8"),
        ("archive.tar.gz", "application/octet-stream"),
        ("no-extension", "application/octet-stream"),
        ("file.unknownext", "application/octet-stream"),
    ],
)
def test_content_type(name: str, expected: str) -> None:
    assert content_type(name) == expected


def test_parse_byte_count_limits() -> None:
    assert parse_byte_count("0") == 0
    assert parse_byte_count(str(MAX_BYTES)) == MAX_BYTES
    for bad in ("", " 1", "+1", "٣", "1.0", str(MAX_BYTES + 1)):
        with pytest.raises(HttpError) as info:
            parse_byte_count(bad)
        assert info.value.status == 400
    assert parse_byte_count("11", maximum=11) == 11


def test_pattern_chunks_are_bounded_and_consistent() -> None:
    total = 3 * CHUNK_SIZE + 123
    chunks = list(pattern_chunks(total))
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
    body = b"".join(chunks)
    assert len(body) == total
    assert body == bytes(i % 251 for i in range(total))
    assert pattern_bytes(total) == body
    assert pattern_bytes(10, offset=300) == body[300:310]
    assert b"".join(pattern_chunks(1000, 7)) == body[:1000]
    assert list(pattern_chunks(0)) == []


def test_pattern_chunks_is_lazy() -> None:
    # A gibibyte body is produced one chunk at a time.
    chunks = pattern_chunks(MAX_BYTES)
    first = next(chunks)
    assert len(first) == CHUNK_SIZE


# -- the get command's pure parts -----------------------------------------------------


def test_parse_url() -> None:
    target = parse_url("https://localhost:4433/a/b.txt?x=1")
    assert (target.host, target.port, target.authority, target.path) == (
        "localhost",
        4433,
        "localhost:4433",
        "/a/b.txt?x=1",
    )
    six = parse_url("https://[::1]:8443")
    assert (six.host, six.port, six.path) == ("::1", 8443, "/")
    assert parse_url("https://example.com/").port == 443
    for bad in (
        "http://localhost/",
        "https:///x",
        "localhost:4433",
        "https://h:99999/",
    ):
        with pytest.raises(GetUsageError):
            parse_url(bad)


def test_output_name() -> None:
    assert output_name(parse_url("https://h/dir/file.bin?x=1")) == "file.bin"
    assert output_name(parse_url("https://h/dir/")) == "index.html"
    assert output_name(parse_url("https://h")) == "index.html"
    assert output_name(parse_url("https://h/%2e%2e")) == "index.html"
    assert output_name(parse_url("https://h/a%2fb")) == "index.html"
    assert output_name(parse_url("https://h/bytes/1024")) == "1024"


def test_parse_header() -> None:
    assert parse_header("X-Thing: some value ") == (b"x-thing", b"some value")
    assert parse_header("accept:*/*") == (b"accept", b"*/*")
    for bad in ("no colon", ": value", "bad name: x", ":path: /x", "x: a\r\nb: c"):
        with pytest.raises(GetUsageError):
            parse_header(bad)


async def test_ordered_output_writes_bodies_in_order(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out"
    with path.open("wb") as file:
        output = OrderedOutput(file)
        # Body 2 finishes first, body 1 is partly held, body 0 streams.
        await output.write(2, b"C" * 10)
        await output.finish(2)
        await output.write(1, b"B1")
        await output.write(0, b"A1")
        await output.write(3, b"dropped")
        await output.finish(3, keep=False)
        await output.write(0, b"A2")
        await output.finish(0)
        await output.write(1, b"B2")
        await output.finish(1)
        await output.aclose()
    assert path.read_bytes() == b"A1A2B1B2" + b"C" * 10


# -- end to end over loopback ---------------------------------------------------


async def test_end_to_end(root: pathlib.Path) -> None:
    certificate = trioquic.testing.development_certificate()
    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"],
        certificate=str(certificate.certificate_path),
        private_key=str(certificate.private_key_path),
    )
    client_settings = trioquic.QuicSettings(
        alpn_protocols=["h3"], ca_certs=str(certificate.certificate_path)
    )
    config = ServerConfig(host="127.0.0.1", port=0, settings=settings, root=root)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await nursery.start(functools.partial(run_server, config))
            port = server.port
            assert app.port == port
            async with open_http3_client(
                "127.0.0.1", port, settings=client_settings
            ) as client:
                response = await client.request("GET", "/a.txt")
                assert response.status == 200
                assert await response.read() == b"hello"
                headers = dict(response.headers)
                assert headers[b"content-type"] == b"text/plain; charset=utf-8"
                assert headers[b"content-length"] == b"5"
                assert headers[b"etag"].startswith(b'"')
                # The server layer (serve_http) advertises HTTP/3 on every
                # response, the TCP door's and HTTP/3's alike.
                assert headers[b"alt-svc"] == f'h3=":{port}"; ma=86400'.encode()

                response = await client.request("GET", "/data.bin")
                assert await response.read() == (root / "data.bin").read_bytes()

                response = await client.request("HEAD", "/data.bin")
                assert response.status == 200
                assert dict(response.headers)[b"content-type"] == (
                    b"application/octet-stream"
                )
                assert await response.read() == b""

                size = 2 * CHUNK_SIZE + 17
                response = await client.request("GET", f"/bytes/{size}")
                body = await response.read()
                assert hashlib.sha256(body).digest() == (
                    hashlib.sha256(pattern_bytes(size)).digest()
                )

                upload = os.urandom(200_000)

                async def chunks() -> AsyncIterator[bytes]:
                    for start in range(0, len(upload), 30_000):
                        yield upload[start : start + 30_000]

                response = await client.request("POST", "/echo", body=chunks())
                assert response.status == 200
                assert await response.read() == upload

                for method, target, status in [
                    ("GET", "/nope", 404),
                    ("GET", "/%2e%2e/secret.txt", 400),
                    ("GET", "/escape", 403),
                    ("POST", "/a.txt", 405),
                    ("GET", f"/bytes/{MAX_BYTES + 1}", 400),
                    ("GET", "/sub", 301),
                ]:
                    response = await client.request(method, target)
                    assert response.status == status, target
                    await response.read()
            nursery.cancel_scope.cancel()


# -- the HTTP/3 examples, as their headers say to run them --------------------------

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_http3_examples_end_to_end() -> None:
    server = subprocess.Popen(
        [sys.executable, "examples/http3_server.py", "--port", "0"],
        cwd=EXAMPLES.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not lines or not lines[-1].startswith("press Ctrl-C"):
            assert time.monotonic() < deadline, lines
            line = server.stdout.readline()
            assert line, f"the server exited: {lines}"
            lines.append(line.rstrip("\n"))
        run_line = next(line for line in lines if line.startswith("run: "))
        argv = shlex.split(run_line[len("run: ") :])
        assert argv[:2] == ["python", "examples/http3_client.py"]
        result = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=EXAMPLES.parent,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        base = argv[-2].rstrip("/")
        assert result.stdout.splitlines() == [
            f"{base}/: 200",
            "hello from trioquic",
            f"{base}/count/3: 200",
            "1",
            "2",
            "3",
        ]
        upper = subprocess.run(
            [sys.executable, *argv[1:4], "--upper", "shout this", f"{base}/upper"],
            cwd=EXAMPLES.parent,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert upper.returncode == 0, upper.stdout + upper.stderr
        assert upper.stdout.splitlines() == [f"{base}/upper: 200", "SHOUT THIS "]
        missing = subprocess.run(
            [sys.executable, *argv[1:4], f"{base}/missing"],
            cwd=EXAMPLES.parent,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert missing.returncode == 1
        server.send_signal(signal.SIGINT)
        rest, _ = server.communicate(timeout=TIMEOUT)
        assert server.returncode == 0
        assert rest.splitlines()[-1] == "stopped"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=TIMEOUT)
