"""The file server of ``trioquic serve --root``: byte ranges, entity tags,
dates and preconditions as pure functions (with hypothesis for the parsers),
directory listings, then all of it end to end over loopback HTTP/3."""

from __future__ import annotations

import calendar
import functools
import os
import pathlib
import re
import urllib.parse

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trioquic
import trioquic.testing
from trioquic.cli import _serve
from trioquic.cli._files import (
    FILE_CHUNK_SIZE,
    UNSATISFIABLE,
    ByteRange,
    EntityTag,
    byte_range,
    entity_tag,
    http_date,
    list_directory,
    listing_page,
    parse_entity_tags,
    parse_http_date,
    plan_file_response,
)
from trioquic.cli._serve import ServerConfig, run_server
from trioquic.h3 import open_http3_client

TIMEOUT = 30.0

SIZE = 1000
MTIME_NS = 784_111_777_123_456_789  # Sun, 06 Nov 1994 08:49:37 GMT + a fraction
MTIME = 784_111_777
ETAG = str(entity_tag(SIZE, MTIME_NS))


def plan(
    method: str = "GET", size: int = SIZE, **fields: str
) -> tuple[int, dict[bytes, bytes], ByteRange | None]:
    headers = [
        (name.replace("_", "-").encode(), value.encode())
        for name, value in fields.items()
    ]
    result = plan_file_response(
        method,
        headers,
        size=size,
        mtime_ns=MTIME_NS,
        media_type="text/plain; charset=utf-8",
    )
    names = [name for name, _ in result.headers]
    assert len(names) == len(set(names)), names
    return result.status, dict(result.headers), result.body


# -- byte ranges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        ("bytes=0-4", 10, (0, 5)),
        ("bytes=5-", 10, (5, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=3-100", 10, (3, 10)),
        ("bytes=9-9", 10, (9, 10)),
        ("BYTES=1-2", 10, (1, 3)),
        ("bytes= 1-2 ,", 10, (1, 3)),
        ("bytes=0-4,3-8", 10, (0, 9)),  # overlapping: coalesced
        ("bytes=0-4,5-6", 10, (0, 7)),  # touching: coalesced
        ("bytes=0-1,-2,2-7", 10, (0, 10)),
        ("bytes=50-60,2-3", 10, (2, 4)),  # the unsatisfiable one dropped
        ("bytes=0-" + "9" * 40, 10, (0, 10)),
        ("bytes=-" + "9" * 5000, 10, (0, 10)),  # beyond int()'s digit limit
        ("bytes=0000000000000000000000000003-4", 10, (3, 5)),
    ],
)
def test_satisfiable_ranges(value: str, size: int, expected: tuple[int, int]) -> None:
    assert byte_range(value, size) == ByteRange(*expected, size)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=-0", 10),
        ("bytes=0-0", 0),
        ("bytes=" + "9" * 40 + "-", 10),
        ("bytes=20-30,40-", 10),
    ],
)
def test_unsatisfiable_ranges(value: str, size: int) -> None:
    assert byte_range(value, size) == UNSATISFIABLE


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("bytes=5-2", 10),  # last before first: invalid
        ("items=0-1", 10),
        ("bytes =0-1", 10),
        ("bytes 0-1", 10),
        ("bytes=", 10),
        ("bytes=,", 10),
        ("bytes=a-b", 10),
        ("bytes=1-2-3", 10),
        ("bytes=--1", 10),
        ("bytes=+1-2", 10),
        ("bytes=0-1,4-5", 10),  # a gap: the whole file, no multipart
        ("bytes=-5", 0),  # satisfiable, but an empty file has no byte to send
        ("bytes=\u0663-", 10),
    ],
)
def test_ignored_ranges(value: str, size: int) -> None:
    assert byte_range(value, size) is None


def _model(
    specs: list[tuple[int | None, int | None]], size: int
) -> tuple[int, tuple[int, int] | None]:
    """What RFC 9110 section 14 asks, computed on sets of byte positions:
    (status, (start, stop) for 206)."""
    chosen: set[int] = set()
    satisfiable = False
    for first, last in specs:
        if first is None:
            assert last is not None
            if last > 0:
                satisfiable = True
                chosen.update(range(max(0, size - last), size))
        elif first < size:
            satisfiable = True
            chosen.update(range(first, size if last is None else min(last + 1, size)))
    if not satisfiable:
        return 416, None
    if not chosen or max(chosen) - min(chosen) + 1 != len(chosen):
        return 200, None
    return 206, (min(chosen), max(chosen) + 1)


_spaces = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def range_headers(draw: st.DrawFn) -> tuple[str, list[tuple[int | None, int | None]]]:
    specs: list[tuple[int | None, int | None]] = []
    texts: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["int", "open", "suffix"]))
        if kind == "suffix":
            length = draw(st.integers(0, 1200))
            specs.append((None, length))
            text = f"-{length}"
        else:
            first = draw(st.integers(0, 1200))
            last = None if kind == "open" else first + draw(st.integers(0, 1200))
            specs.append((first, last))
            text = f"{first}-" if last is None else f"{first}-{last}"
        texts.append(draw(_spaces) + text + draw(_spaces))
        if draw(st.booleans()) and draw(st.booleans()):
            texts.append(draw(_spaces))  # an empty list element
    unit = draw(st.sampled_from(["bytes", "Bytes", "BYTES"]))
    return f"{unit}={','.join(texts)}", specs


@given(header=range_headers(), size=st.integers(0, 1000))
def test_any_valid_range_gives_exactly_the_right_bytes(
    header: tuple[str, list[tuple[int | None, int | None]]], size: int
) -> None:
    value, specs = header
    status, headers, body = plan("GET", size=size, range=value)
    expected_status, expected_range = _model(specs, size)
    if size == 0 and expected_status == 200:
        assert status == 200  # a suffix of an empty file: the (empty) whole
    assert status == expected_status, (value, size)
    data = bytes(i % 251 for i in range(size))
    if status == 206:
        assert body is not None and expected_range is not None
        assert (body.start, body.stop) == expected_range
        assert body.length == len(data[body.start : body.stop]) > 0
        assert headers[b"content-range"] == (
            f"bytes {body.start}-{body.stop - 1}/{size}".encode()
        )
        assert headers[b"accept-ranges"] == b"bytes"
    elif status == 416:
        assert body is None
        assert headers[b"content-range"] == f"bytes */{size}".encode()
    else:
        assert body == ByteRange(0, size, size)
        assert b"content-range" not in headers


@given(value=st.text(max_size=60), size=st.integers(0, 100))
def test_any_range_header_never_crashes(value: str, size: int) -> None:
    result = byte_range(value, size)
    assert (
        result is None
        or result == UNSATISFIABLE
        or (isinstance(result, ByteRange) and 0 <= result.start < result.stop <= size)
    )
    status, _, _ = plan("GET", size=size, range="bytes=" + value)
    assert status in (200, 206, 416)


@given(
    value=st.text(alphabet=st.sampled_from("bytes=0123456789-, \t"), max_size=30),
    size=st.integers(0, 50),
)
def test_range_lookalikes_never_crash(value: str, size: int) -> None:
    result = byte_range(value, size)
    if isinstance(result, ByteRange):
        assert 0 <= result.start < result.stop <= size == result.size


def test_ranges_only_for_get() -> None:
    status, headers, _ = plan("HEAD", range="bytes=0-4")
    assert status == 200
    assert b"content-range" not in headers


# -- entity tags ---------------------------------------------------------------------

_etagc = st.text(
    alphabet=st.sampled_from(
        [chr(c) for c in range(0x21, 0x7F) if c != 0x22] + ["\x80", "é", "\xff"]
    ),
    max_size=12,
)


@given(
    tags=st.lists(st.builds(EntityTag, _etagc, st.booleans()), min_size=1, max_size=6),
    separators=st.lists(
        st.sampled_from([",", ", ", " ,", ",\t", ", ,", ",,  "]), min_size=6, max_size=6
    ),
    before=_spaces,
    after=_spaces,
)
def test_entity_tag_lists_parse_back(
    tags: list[EntityTag], separators: list[str], before: str, after: str
) -> None:
    text = before + str(tags[0])
    for tag, separator in zip(tags[1:], separators, strict=False):
        text += separator + str(tag)
    assert parse_entity_tags(text + after) == tuple(tags)


@given(value=st.text(max_size=40))
def test_any_entity_tag_list_never_crashes(value: str) -> None:
    parsed = parse_entity_tags(value)
    assert parsed is None or parsed == "*" or isinstance(parsed, tuple)
    status, _, _ = plan("GET", if_none_match=value)
    assert status in (200, 304)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*", "*"),
        (" * ", "*"),
        ('"a"', (EntityTag("a"),)),
        ('W/"a" , "b",', (EntityTag("a", weak=True), EntityTag("b"))),
        ('""', (EntityTag(""),)),
        ("", ()),
        ('"a', None),
        ("a", None),
        ('"a" "b"', None),
        ('w/"a"', None),
        ('"a"b', None),
        ('"a", *', None),
    ],
)
def test_parse_entity_tags(value: str, expected: object) -> None:
    assert parse_entity_tags(value) == expected


def test_entity_tags_compare() -> None:
    strong, weak = EntityTag("x"), EntityTag("x", weak=True)
    assert strong.strong_match(EntityTag("x"))
    assert not strong.strong_match(weak) and not weak.strong_match(weak)
    assert strong.weak_match(weak) and weak.weak_match(weak)
    assert not strong.weak_match(EntityTag("y"))
    assert entity_tag(1000, MTIME_NS) != entity_tag(1001, MTIME_NS)
    assert entity_tag(1000, MTIME_NS) != entity_tag(1000, MTIME_NS + 1)
    assert str(entity_tag(255, 16)) == '"ff-10"'


# -- dates ----------------------------------------------------------------------------


def test_http_dates() -> None:
    assert http_date(MTIME) == "Sun, 06 Nov 1994 08:49:37 GMT"
    for form in (
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ):
        assert parse_http_date(form) == MTIME, form
    for bad in (
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "784111777",
        "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
    ):
        assert parse_http_date(bad) is None, bad


@given(st.integers(0, 253402300799))  # up to 9999-12-31
def test_http_dates_round_trip(seconds: int) -> None:
    assert parse_http_date(http_date(seconds)) == seconds
    assert re.fullmatch(
        r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", http_date(seconds)
    )


# -- preconditions (RFC 9110 section 13.2.2) -------------------------------------------


def test_plain_get_carries_validators() -> None:
    status, headers, body = plan()
    assert status == 200
    assert body == ByteRange(0, SIZE, SIZE)
    assert headers[b"etag"] == ETAG.encode()
    assert headers[b"last-modified"] == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"accept-ranges"] == b"bytes"
    assert headers[b"cache-control"] == b"no-cache"
    assert b"content-length" not in headers  # the application adds it


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "value", [ETAG, "W/" + ETAG, f'"other", {ETAG}', "*", f'"x",,W/{ETAG}']
)
def test_if_none_match_gives_304(method: str, value: str) -> None:
    status, headers, body = plan(method, if_none_match=value)
    assert (status, body) == (304, None)
    assert headers == {
        b"etag": ETAG.encode(),
        b"last-modified": b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"cache-control": b"no-cache",
    }


def test_if_none_match_on_other_methods_gives_412() -> None:
    assert plan("POST", if_none_match=ETAG)[0] == 412
    assert plan("DELETE", if_none_match="*")[0] == 412
    assert plan("POST", if_none_match='"other"')[0] == 200


@pytest.mark.parametrize("value", ['"other"', 'W/"other"', '"a', "junk", ""])
def test_if_none_match_without_a_match(value: str) -> None:
    assert plan(if_none_match=value)[0] == 200


def test_if_modified_since() -> None:
    assert plan(if_modified_since="Sun, 06 Nov 1994 08:49:37 GMT")[0] == 304
    assert plan(if_modified_since="Mon, 07 Nov 1994 08:49:37 GMT")[0] == 304
    assert plan("HEAD", if_modified_since="Mon, 07 Nov 1994 08:49:37 GMT")[0] == 304
    assert plan(if_modified_since="Sun, 06 Nov 1994 08:49:36 GMT")[0] == 200
    assert plan(if_modified_since="not a date")[0] == 200
    # Only for GET and HEAD; ignored when If-None-Match is present.
    assert plan("POST", if_modified_since="Mon, 07 Nov 1994 08:49:37 GMT")[0] == 200
    later = "Mon, 07 Nov 2094 08:49:37 GMT"
    assert plan(if_none_match='"other"', if_modified_since=later)[0] == 200


def test_if_match() -> None:
    assert plan(if_match=ETAG)[0] == 200
    assert plan(if_match=f'"a", {ETAG}')[0] == 200
    assert plan(if_match="*")[0] == 200
    status, headers, body = plan(if_match='"other"')
    assert (status, body) == (412, None)
    assert headers[b"etag"] == ETAG.encode()
    assert plan(if_match="W/" + ETAG)[0] == 412  # strong comparison
    assert plan(if_match="junk")[0] == 412
    # If-Match comes before If-None-Match.
    assert plan(if_match='"other"', if_none_match=ETAG)[0] == 412


def test_if_unmodified_since() -> None:
    assert plan(if_unmodified_since="Sun, 06 Nov 1994 08:49:36 GMT")[0] == 412
    assert plan(if_unmodified_since="Sun, 06 Nov 1994 08:49:37 GMT")[0] == 200
    assert plan(if_unmodified_since="junk")[0] == 200
    # Ignored when If-Match is present.
    assert (
        plan(if_match=ETAG, if_unmodified_since="Sun, 06 Nov 1994 08:49:36 GMT")[0]
        == 200
    )


def test_range_with_validators_and_if_range() -> None:
    status, headers, body = plan(range="bytes=10-19")
    assert (status, body) == (206, ByteRange(10, 20, SIZE))
    assert headers[b"etag"] == ETAG.encode()
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"content-range"] == f"bytes 10-19/{SIZE}".encode()
    # If-Range: the range only if the representation is the one named.
    assert plan(range="bytes=10-19", if_range=ETAG)[0] == 206
    assert plan(range="bytes=10-19", if_range='"other"')[0] == 200
    assert plan(range="bytes=10-19", if_range="W/" + ETAG)[0] == 200
    assert plan(range="bytes=10-19", if_range="Sun, 06 Nov 1994 08:49:37 GMT")[0] == 206
    assert plan(range="bytes=10-19", if_range="Mon, 07 Nov 1994 08:49:37 GMT")[0] == 200
    assert plan(range="bytes=10-19", if_range="junk")[0] == 200
    assert plan(range=f"bytes={SIZE}-", if_range='"other"')[0] == 200
    status, headers, _ = plan(range=f"bytes={SIZE}-")
    assert status == 416
    assert headers[b"content-range"] == f"bytes */{SIZE}".encode()
    # A 304 wins over the range.
    assert plan(range="bytes=10-19", if_none_match=ETAG)[0] == 304


# -- directory listings ---------------------------------------------------------------


def test_listing(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    (root / "zdir").mkdir(parents=True)
    (root / "adir").mkdir()
    (root / "b.txt").write_bytes(b"12345")
    (root / 'x <b>&"y.txt').write_bytes(b"")
    (root / "a b#?%.txt").write_bytes(b"1")
    (tmp_path / "outside.txt").write_text("secret")
    (root / "leak").symlink_to(tmp_path / "outside.txt")
    (root / "inside").symlink_to(root / "b.txt")
    (root / "dangling").symlink_to(root / "missing")
    os.utime(root / "b.txt", (MTIME, MTIME))
    entries = list_directory(root, root)
    assert [entry.name for entry in entries] == [
        "adir",
        "zdir",
        "a b#?%.txt",
        "b.txt",
        "inside",
        'x <b>&"y.txt',
    ]
    page = listing_page("/", entries).decode()
    assert "../" not in page
    assert '<a href="a%20b%23%3F%25.txt">a b#?%.txt</a>' in page
    assert '<a href="x%20%3Cb%3E%26%22y.txt">x &lt;b&gt;&amp;&quot;y.txt</a>' in page
    assert '<a href="adir/">adir/</a>' in page
    assert "<b>" not in page
    assert "1994-11-06 08:49:37 UTC" in page
    assert '<td class="size">5</td>' in page
    sub = listing_page("/a <dir>/", []).decode()
    assert '<a href="../">../</a>' in sub
    assert "Index of /a &lt;dir&gt;/" in sub
    # Every link resolves, as a browser would, to an entry's own name.
    for href in re.findall(r'href="([^"]+)"', page):
        name = urllib.parse.unquote(href.replace("&amp;", "&")).rstrip("/")
        assert (root / name).exists()


# -- end to end over loopback HTTP/3 --------------------------------------------------


@pytest.fixture
def site(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a <b>.txt").write_text("x")
    (root / "with-index").mkdir()
    (root / "with-index" / "index.html").write_text("<p>index</p>")
    (root / "big.bin").write_bytes(os.urandom(3 * FILE_CHUNK_SIZE + 1234))
    (root / "empty.txt").write_bytes(b"")
    (root / "style.css").write_text("body {}")
    return root


async def test_file_server_end_to_end(
    site: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[pathlib.Path] = []
    real_open = _serve._open_file

    def counting_open(
        path: pathlib.Path, start: int, size: int
    ) -> tuple[int, os.stat_result, bytes]:
        opened.append(path)
        return real_open(path, start, size)

    monkeypatch.setattr(_serve, "_open_file", counting_open)
    certificate = trioquic.testing.development_certificate()
    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"],
        certificate=str(certificate.certificate_path),
        private_key=str(certificate.private_key_path),
    )
    client_settings = trioquic.QuicSettings(
        alpn_protocols=["h3"], ca_certs=str(certificate.certificate_path)
    )
    config = ServerConfig(host="127.0.0.1", port=0, settings=settings, root=site)
    big = (site / "big.bin").read_bytes()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, _ = await nursery.start(functools.partial(run_server, config))
            async with open_http3_client(
                "127.0.0.1", server.port, settings=client_settings
            ) as client:

                async def get(
                    target: str, method: str = "GET", **fields: str
                ) -> tuple[int, dict[bytes, bytes], bytes]:
                    headers = [(k.replace("_", "-"), v) for k, v in fields.items()]
                    response = await client.request(method, target, headers=headers)
                    return (
                        response.status,
                        dict(response.headers),
                        await response.read(),
                    )

                # The whole file, with its validators.
                status, headers, body = await get("/big.bin")
                assert (status, body) == (200, big)
                assert headers[b"content-length"] == str(len(big)).encode()
                assert headers[b"accept-ranges"] == b"bytes"
                assert headers[b"cache-control"] == b"no-cache"
                etag = headers[b"etag"].decode()
                last_modified = headers[b"last-modified"].decode()
                stat = (site / "big.bin").stat()
                assert etag == str(entity_tag(stat.st_size, stat.st_mtime_ns))
                assert parse_http_date(last_modified) == int(stat.st_mtime)
                assert opened == [site / "big.bin"]

                # Revalidation: 304 without a body, the file never opened.
                for fields in (
                    {"if_none_match": etag},
                    {"if_none_match": f'"nope", W/{etag}'},
                    {"if_modified_since": last_modified},
                ):
                    for method in ("GET", "HEAD"):
                        status, headers, body = await get("/big.bin", method, **fields)
                        assert (status, body) == (304, b""), (method, fields)
                        assert headers[b"etag"] == etag.encode()
                        assert headers[b"last-modified"] == last_modified.encode()
                        assert b"content-length" not in headers
                status, _, body = await get("/big.bin", if_none_match='"stale"')
                assert (status, body) == (200, big)
                status, headers, body = await get("/big.bin", if_match='"stale"')
                assert status == 412
                assert headers[b"content-type"] == b"text/plain; charset=utf-8"

                # HEAD: the headers of a GET, no body, the file never opened.
                status, headers, body = await get("/big.bin", "HEAD")
                assert (status, body) == (200, b"")
                assert headers[b"etag"] == etag.encode()
                assert headers[b"content-type"] == b"application/octet-stream"
                assert len(opened) == 2

                # Ranges, across chunk boundaries, and If-Range.
                start, stop = FILE_CHUNK_SIZE - 10, 2 * FILE_CHUNK_SIZE + 10
                for value, expected in (
                    (f"bytes={start}-{stop - 1}", (start, stop)),
                    ("bytes=-100", (len(big) - 100, len(big))),
                    (f"bytes={len(big) - 1}-", (len(big) - 1, len(big))),
                    ("bytes=0-0", (0, 1)),
                ):
                    status, headers, body = await get("/big.bin", range=value)
                    assert status == 206, value
                    assert body == big[expected[0] : expected[1]]
                    assert headers[b"content-length"] == str(len(body)).encode()
                    assert headers[b"content-range"] == (
                        f"bytes {expected[0]}-{expected[1] - 1}/{len(big)}".encode()
                    )
                status, _, body = await get(
                    "/big.bin", range="bytes=0-9", if_range=etag
                )
                assert (status, body) == (206, big[:10])
                status, _, body = await get(
                    "/big.bin", range="bytes=0-9", if_range='"old"'
                )
                assert (status, body) == (200, big)
                status, _, body = await get("/big.bin", range="bytes=0-1,5-6")
                assert (status, body) == (200, big)  # no multipart: the whole file
                opened.clear()
                status, headers, _ = await get("/big.bin", range=f"bytes={len(big)}-")
                assert status == 416
                assert headers[b"content-range"] == f"bytes */{len(big)}".encode()
                status, headers, body = await get("/empty.txt", range="bytes=0-")
                assert status == 416
                assert opened == []
                status, headers, body = await get("/empty.txt")
                assert (status, body) == (200, b"")
                assert headers[b"content-length"] == b"0"

                # Content types.
                status, headers, body = await get("/style.css")
                assert headers[b"content-type"] == b"text/css; charset=utf-8"

                # Directories: the slash added (query kept), index.html, listing.
                status, headers, _ = await get("/docs?sort=name")
                assert status == 301
                assert headers[b"location"] == b"/docs/?sort=name"
                status, headers, body = await get("/with-index/")
                assert (status, body) == (200, b"<p>index</p>")
                status, headers, body = await get("/docs/")
                assert status == 200
                assert headers[b"content-type"] == b"text/html; charset=utf-8"
                assert b'<a href="a%20%3Cb%3E.txt">a &lt;b&gt;.txt</a>' in body
                assert b'<a href="../">../</a>' in body
                status, headers, body = await get("/")
                assert status == 200
                for name in (b"big.bin", b"docs/", b"empty.txt", b"with-index/"):
                    assert b'href="' + name + b'"' in body
                assert b'href="../"' not in body
                status, headers, body = await get("/docs/", "HEAD")
                assert (status, body) == (200, b"")
                assert headers[b"content-type"] == b"text/html; charset=utf-8"
                status, _, body = await get("/docs/a%20%3Cb%3E.txt")
                assert (status, body) == (200, b"x")

                # A file changed between two requests: a new validator.
                os.utime(site / "style.css", ns=(0, 10**18))
                status, headers, _ = await get("/style.css", if_none_match=etag)
                assert status == 200
                assert headers[b"last-modified"] == http_date(10**9).encode()
            nursery.cancel_scope.cancel()


def test_dates_agree_with_the_calendar() -> None:
    # An independent check of the IMF-fixdate fields.
    seconds = calendar.timegm((2024, 2, 29, 23, 59, 60, 0, 0, 0))
    assert http_date(seconds) == "Fri, 01 Mar 2024 00:00:00 GMT"
    assert parse_http_date("Thu, 29 Feb 2024 23:59:60 GMT") == seconds
    assert parse_http_date("Thu, 29 Feb 2023 12:00:00 GMT") is None


def test_only_ascii_digits() -> None:
    assert parse_http_date("Sun, \u06606 Nov 1994 08:49:37 GMT") is None
    assert parse_http_date("Sunday, 06-Nov-\u06694 08:49:37 GMT") is None
    assert parse_http_date("Sun Nov  6 08:49:37 199\u0664") is None


async def _loopback_client(
    site: pathlib.Path, nursery: trio.Nursery
) -> tuple[trioquic.QuicSettings, int]:
    certificate = trioquic.testing.development_certificate()
    settings = trioquic.QuicSettings(
        alpn_protocols=["h3"],
        certificate=str(certificate.certificate_path),
        private_key=str(certificate.private_key_path),
    )
    config = ServerConfig(host="127.0.0.1", port=0, settings=settings, root=site)
    server, _ = await nursery.start(functools.partial(run_server, config))
    client_settings = trioquic.QuicSettings(
        alpn_protocols=["h3"], ca_certs=str(certificate.certificate_path)
    )
    return client_settings, server.port


async def test_a_file_changed_before_it_is_opened_is_answered_as_opened(
    site: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = _serve._open_file
    replacement = b"new!!"

    def replace_then_open(
        path: pathlib.Path, start: int, size: int
    ) -> tuple[int, os.stat_result, bytes]:
        path.write_bytes(replacement)
        os.utime(path, ns=(0, 2 * 10**18))
        return real_open(path, start, size)

    monkeypatch.setattr(_serve, "_open_file", replace_then_open)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            settings, port = await _loopback_client(site, nursery)
            async with open_http3_client(
                "127.0.0.1", port, settings=settings
            ) as client:
                # Planned as bytes 2-99 of the big file; sent as the new file's.
                response = await client.request(
                    "GET", "/big.bin", headers=[("range", "bytes=2-99")]
                )
                headers = dict(response.headers)
                assert response.status == 206
                assert await response.read() == replacement[2:]
                assert headers[b"content-range"] == b"bytes 2-4/5"
                assert headers[b"etag"] == str(entity_tag(5, 2 * 10**18)).encode()
                # Planned as bytes 7-9 of ten; sent as the last 3 of the new five.
                (site / "style.css").write_bytes(b"0123456789")
                response = await client.request(
                    "GET", "/style.css", headers=[("range", "bytes=-3")]
                )
                assert response.status == 206
                assert dict(response.headers)[b"content-range"] == b"bytes 2-4/5"
                assert await response.read() == b"w!!"
            nursery.cancel_scope.cancel()


async def test_a_file_that_shrinks_while_sent_resets_the_stream(
    site: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = _serve._open_file

    def open_then_truncate(
        path: pathlib.Path, start: int, size: int
    ) -> tuple[int, os.stat_result, bytes]:
        opened = real_open(path, start, size)
        os.truncate(path, FILE_CHUNK_SIZE)
        return opened

    monkeypatch.setattr(_serve, "_open_file", open_then_truncate)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            settings, port = await _loopback_client(site, nursery)
            async with open_http3_client(
                "127.0.0.1", port, settings=settings
            ) as client:
                response = await client.request("GET", "/big.bin")
                assert response.status == 200
                with pytest.raises(trioquic.h3.H3Error):
                    await response.read()
                # The connection carries on.
                response = await client.request("GET", "/style.css")
                assert (response.status, await response.read()) == (200, b"body {}")
            nursery.cancel_scope.cancel()
