"""The file-serving part of ``trioquic serve --root``: validators, conditional
requests, byte ranges, content types and directory listings (RFC 9110
sections 8.8, 13 and 14), as pure functions of the request's header fields
and a file's ``stat`` result.

:func:`plan_file_response` is the whole decision for one file: which status
(200, 206, 304, 412, 416), which header fields, and which bytes of the file
(if any) to send. It never touches the file system, so the application can
answer ``HEAD``, 304, 412 and 416 without opening the file.

Choices, where RFC 9110 leaves one:

* ETags are strong, ``"<size>-<mtime_ns>"`` in hexadecimal: they change when
  the file's size or modification time does.
* A request for several ranges gets one range (206) when they overlap or
  touch and so coalesce into one, and the whole file (200) otherwise (the
  RFC lets a server ignore ``Range``; no ``multipart/byteranges``).
* A ``Range`` header that is not valid ``bytes=`` syntax is ignored (200);
  one that is valid but where no range starts inside the file gets 416.
* A malformed ``If-None-Match`` is ignored; a malformed ``If-Match`` matches
  nothing (412).
* Files carry ``cache-control: no-cache``: a browser keeps them but asks
  again each time (a cheap 304), so edits show up at once.
"""

from __future__ import annotations

import calendar
import html
import mimetypes
import os
import re
import stat as stat_module
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

Headers = list[tuple[bytes, bytes]]

#: What files are read and sent in: large reads, few thread round trips.
FILE_CHUNK_SIZE = 64 * 1024


# -- content types -------------------------------------------------------------


def content_type(path: str | os.PathLike[str]) -> str:
    """The media type of a file, from its name (``application/octet-stream``
    when unknown); text types are declared UTF-8."""
    guessed, encoding = mimetypes.guess_type(os.fspath(path), strict=False)
    if guessed is None or encoding is not None:
        # A compressed file (.gz, ...) is served as the bytes it is.
        return "application/octet-stream"
    if guessed.startswith("text/") or guessed in (
        "application/javascript",
        "application/json",
        "image/svg+xml",
    ):
        return f"{guessed}; charset=utf-8"
    return guessed


# -- entity tags (RFC 9110 section 8.8.3) ----------------------------------------

# etagc = "!" / %x23-7E / obs-text (%x80-FF; header bytes are decoded as Latin-1)
_ETAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*')


@attrs.frozen
class EntityTag:
    """An entity tag: its opaque part (without the quotes) and weakness."""

    opaque: str
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'

    def strong_match(self, other: EntityTag) -> bool:
        """Strong comparison: both strong and the same (section 8.8.3.2)."""
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: EntityTag) -> bool:
        """Weak comparison: the same opaque part, weak or not."""
        return self.opaque == other.opaque


def entity_tag(size: int, mtime_ns: int) -> EntityTag:
    """The (strong) entity tag of a file of ``size`` bytes modified at
    ``mtime_ns``."""
    return EntityTag(f"{size:x}-{mtime_ns:x}")


def parse_entity_tags(value: str) -> Literal["*"] | tuple[EntityTag, ...] | None:
    """The value of ``If-Match`` or ``If-None-Match``: ``"*"``, or the
    entity tags of the comma-separated list (empty elements allowed, as
    in any list), or ``None`` when it is malformed."""
    if value.strip(" \t") == "*":
        return "*"
    tags: list[EntityTag] = []
    position = 0
    length = len(value)
    while True:
        # Empty list elements (", ,") are allowed (RFC 9110 section 5.6.1.2).
        while position < length and value[position] in " \t,":
            position += 1
        if position == length:
            break
        match = _ETAG.match(value, position)
        if match is None:
            return None
        tags.append(EntityTag(match.group(2), weak=match.group(1) is not None))
        position = match.end()
        if position < length and value[position] != ",":
            return None
    return tuple(tags)


# -- dates (RFC 9110 section 5.6.7) -------------------------------------------------

_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d\d):(\d\d):(\d\d)"
_IMF_FIXDATE = re.compile(
    r"(?:" + "|".join(_DAYS) + r"), (\d\d) " + _MONTH + r" (\d{4}) " + _TIME + " GMT",
    re.ASCII,
)
_RFC850 = re.compile(
    r"(?:"
    + "|".join(_LONG_DAYS)
    + r"), (\d\d)-"
    + _MONTH
    + r"-(\d\d) "
    + _TIME
    + " GMT",
    re.ASCII,
)
_ASCTIME = re.compile(
    r"(?:" + "|".join(_DAYS) + r") " + _MONTH + r" ([ \d]\d) " + _TIME + r" (\d{4})",
    re.ASCII,
)


def http_date(seconds: float) -> str:
    """``seconds`` since the epoch as an IMF-fixdate
    (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(value: str) -> int | None:
    """An HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms
    recipients must accept) as seconds since the epoch; ``None`` if it is
    not one."""
    value = value.strip(" \t")
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.fullmatch(value):
        day, month, short_year, hour, minute, second = match.groups()
        # Two-digit years more than 50 years ahead are in the past (7.1.1.1).
        this_year = time.gmtime().tm_year
        year_number = this_year - this_year % 100 + int(short_year)
        if year_number > this_year + 50:
            year_number -= 100
        year = str(year_number)
    elif match := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    fields = (int(year), _MONTHS.index(month) + 1, int(day))
    clock = (int(hour), int(minute), int(second))
    if not 1 <= fields[2] <= 31 or clock[0] > 23 or clock[1] > 59 or clock[2] > 60:
        return None
    if fields[2] > calendar.monthrange(fields[0], fields[1])[1]:
        return None  # 31 February and the like
    return calendar.timegm((*fields, *clock, 0, 0, 0))


# -- byte ranges (RFC 9110 section 14) ----------------------------------------------

_RANGE_SPEC = re.compile(r"[ \t]*(?:(\d+)-(\d*)|-(\d+))[ \t]*", re.ASCII)
# Any number with more digits than this is larger than any file.
_MAX_DIGITS = 19
_HUGE = 2**64


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


@attrs.frozen
class ByteRange:
    """Bytes ``start`` to ``stop`` (exclusive) of a file of ``size`` bytes."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


#: A ``Range`` where no range overlaps the file (416).
UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"


def parse_range_specs(value: str) -> list[tuple[int | None, int | None]] | None:
    """The ranges of a ``Range: bytes=...`` value as ``(first, last)`` pairs
    (``(first, None)`` for ``first-``, ``(None, n)`` for the suffix ``-n``);
    ``None`` when it is not valid syntax or not in bytes."""
    unit, equals, rest = value.partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    specs: list[tuple[int | None, int | None]] = []
    for element in rest.split(","):
        if not element.strip(" \t"):
            continue  # an empty list element
        match = _RANGE_SPEC.fullmatch(element)
        if match is None:
            return None
        first, last, suffix = match.groups()
        if suffix is not None:
            specs.append((None, _number(suffix)))
        else:
            first_pos = _number(first)
            last_pos = _number(last) if last else None
            if last_pos is not None and last_pos < first_pos:
                return None  # invalid range-spec (section 14.1.1)
            specs.append((first_pos, last_pos))
    return specs or None


def select_range(
    specs: Sequence[tuple[int | None, int | None]], size: int
) -> ByteRange | Literal["unsatisfiable"] | None:
    """What to send of a ``size``-byte file for ranges ``specs``: one
    :class:`ByteRange` (206), :data:`UNSATISFIABLE` (416) or ``None`` for
    the whole file (200: several ranges that do not coalesce into one, or
    a suffix range of an empty file)."""
    ranges: list[tuple[int, int]] = []
    for first, last in specs:
        if first is None:
            assert last is not None
            if last == 0:
                continue  # a zero-length suffix is unsatisfiable
            if size == 0:
                return None  # satisfiable, but there is no byte to send
            ranges.append((max(size - last, 0), size))
        elif first < size:
            stop = size if last is None else min(last + 1, size)
            ranges.append((first, stop))
    if not ranges:
        return UNSATISFIABLE
    ranges.sort()
    start, stop = ranges[0]
    for next_start, next_stop in ranges[1:]:
        if next_start > stop:
            return None  # a gap: send the whole file
        stop = max(stop, next_stop)
    return ByteRange(start, stop, size)


def byte_range(value: str, size: int) -> ByteRange | Literal["unsatisfiable"] | None:
    """The decision for a ``Range`` field value on a ``size``-byte file
    (``None``: ignore it, send the whole file)."""
    specs = parse_range_specs(value)
    return None if specs is None else select_range(specs, size)


# -- conditional requests (RFC 9110 section 13) ---------------------------------------


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """A request header field's value (Latin-1), repeated lines joined with
    ``", "`` as lists are; ``None`` when absent."""
    values = [value for key, value in headers if key == name]
    if not values:
        return None
    return ", ".join(value.decode("latin-1") for value in values)


@attrs.frozen
class FilePlan:
    """How to answer a request for one file (see :func:`plan_file_response`)."""

    status: int
    #: Header fields: validators, ``content-type``, ``content-range``...
    #: (not ``content-length``: the application adds it, HEAD aside).
    headers: Headers
    #: The bytes of the file to send (``None``: no file content, the
    #: application sends a short text body for 412 and 416, nothing for 304).
    body: ByteRange | None = None


def _tags_match(
    tags: Literal["*"] | tuple[EntityTag, ...] | None, etag: EntityTag, *, weak: bool
) -> bool:
    if tags == "*":
        return True
    if tags is None:
        return False
    if weak:
        return any(tag.weak_match(etag) for tag in tags)
    return any(tag.strong_match(etag) for tag in tags)


def plan_file_response(
    method: str,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    size: int,
    mtime_ns: int,
    media_type: str,
) -> FilePlan:
    """Answer ``method`` (``GET``, ``HEAD``, or another for the 412 rules)
    with request ``headers`` for a file of ``size`` bytes, modified at
    ``mtime_ns``, of type ``media_type``: the preconditions in the order of
    RFC 9110 section 13.2.2, then ``Range`` (GET only) with ``If-Range``."""
    headers = list(headers)
    etag = entity_tag(size, mtime_ns)
    modified = mtime_ns // 1_000_000_000
    validators: Headers = [
        (b"etag", str(etag).encode()),
        (b"last-modified", http_date(modified).encode()),
        (b"cache-control", b"no-cache"),
    ]
    safe = method in ("GET", "HEAD")

    def failed() -> FilePlan:
        return FilePlan(412, validators)

    if_match = header_value(headers, b"if-match")
    if if_match is not None:
        if not _tags_match(parse_entity_tags(if_match), etag, weak=False):
            return failed()
    else:
        since = header_value(headers, b"if-unmodified-since")
        date = parse_http_date(since) if since is not None else None
        if date is not None and modified > date:
            return failed()
    if_none_match = header_value(headers, b"if-none-match")
    if if_none_match is not None:
        tags = parse_entity_tags(if_none_match)
        if tags is not None and _tags_match(tags, etag, weak=True):
            return FilePlan(304, validators) if safe else failed()
    elif safe:
        since = header_value(headers, b"if-modified-since")
        date = parse_http_date(since) if since is not None else None
        if date is not None and modified <= date:
            return FilePlan(304, validators)

    entity: Headers = [
        *validators,
        (b"content-type", media_type.encode()),
        (b"accept-ranges", b"bytes"),
    ]
    whole = FilePlan(200, entity, ByteRange(0, size, size))
    range_value = header_value(headers, b"range")
    if method != "GET" or range_value is None:
        return whole
    if_range = header_value(headers, b"if-range")
    if if_range is not None and not _if_range_holds(if_range, etag, modified):
        return whole
    selected = byte_range(range_value, size)
    if selected is None:
        return whole
    if selected == UNSATISFIABLE:
        return FilePlan(
            416, [*validators, (b"content-range", f"bytes */{size}".encode())]
        )
    return FilePlan(
        206,
        [*entity, (b"content-range", selected.content_range().encode())],
        selected,
    )


def _if_range_holds(value: str, etag: EntityTag, modified: int) -> bool:
    """``If-Range``: an entity tag must match strongly, a date exactly
    (section 13.1.5)."""
    stripped = value.strip(" \t")
    if stripped.startswith(('"', "W/")):
        tags = parse_entity_tags(stripped)
        return isinstance(tags, tuple) and len(tags) == 1 and tags[0].strong_match(etag)
    date = parse_http_date(stripped)
    return date is not None and date == modified


# -- directory listings -----------------------------------------------------------


@attrs.frozen
class ListingEntry:
    name: str
    is_dir: bool
    size: int
    mtime: float


def list_directory(
    base: os.PathLike[str] | str, directory: os.PathLike[str] | str
) -> list[ListingEntry]:
    """The entries of ``directory`` (under ``base``) for a listing, sorted by
    name, directories first; entries that are links leading outside
    ``base`` or that cannot be examined are left out. Blocking (run it in a
    thread)."""
    base_path = os.path.realpath(base)
    entries: list[ListingEntry] = []
    with os.scandir(directory) as scan:
        for entry in scan:
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if os.path.commonpath([base_path, target]) != base_path:
                        continue
                info = entry.stat()
            except (OSError, ValueError):
                continue
            is_dir = stat_module.S_ISDIR(info.st_mode)
            if not is_dir and not stat_module.S_ISREG(info.st_mode):
                continue  # sockets, devices, FIFOs are not served
            entries.append(
                ListingEntry(entry.name, is_dir, info.st_size, info.st_mtime)
            )
    entries.sort(key=lambda e: (not e.is_dir, e.name))
    return entries


def listing_page(url_path: str, entries: Sequence[ListingEntry]) -> bytes:
    """An HTML listing of the directory at ``url_path`` (decoded, ending in
    ``/``): a parent link (below the root), then each entry's link (its
    name percent-encoded), size and modification time, names escaped."""
    title = html.escape(f"Index of {url_path}")
    rows: list[str] = []
    if url_path != "/":
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for entry in entries:
        name = entry.name + ("/" if entry.is_dir else "")
        href = html.escape(urllib.parse.quote(name), quote=True)
        size = "-" if entry.is_dir else str(entry.size)
        modified = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.mtime))
        rows.append(
            f'<tr><td><a href="{href}">{html.escape(name)}</a></td>'
            f'<td class="size">{size}</td><td>{modified} UTC</td></tr>'
        )
    body = "\n".join(rows)
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<style>td {{ padding: 0 1em 0 0 }} .size {{ text-align: right }}</style></head>
<body>
<h1>{title}</h1>
<table>
<tr><th>Name</th><th>Size</th><th>Modified</th></tr>
{body}
</table>
</body>
</html>
""".encode()
