"""Header fields: normalizing what applications pass, splitting off
pseudo-headers, and sizes (RFC 9114 section 4)."""

from __future__ import annotations

from collections.abc import Iterable

from .._engine import Headers as Headers

#: Header fields as applications may pass them: names and values as ``str``
#: or ``bytes``.
HeaderInput = Iterable[tuple[bytes | str, bytes | str]]


def normalize_headers(headers: HeaderInput) -> Headers:
    """Headers as lowercase-name byte pairs; pseudo-headers are refused."""
    out: Headers = []
    for name, value in headers:
        bname = name.encode("ascii") if isinstance(name, str) else bytes(name)
        bvalue = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        bname = bname.lower()
        if bname.startswith(b":"):
            raise ValueError(
                f"pseudo-headers are set by trioquic, not passed: {name!r}"
            )
        out.append((bname, bvalue))
    return out


def split_pseudo(headers: Headers) -> tuple[dict[bytes, bytes], Headers]:
    pseudo: dict[bytes, bytes] = {}
    regular: Headers = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            regular.append((name, value))
    return pseudo, regular


def field_section_size(headers: Headers) -> int:
    """RFC 9114 section 4.2.2: names + values + 32 bytes per field."""
    return sum(len(name) + len(value) + 32 for name, value in headers)


def status_headers(status: int, headers: HeaderInput) -> Headers:
    """``:status`` and the regular fields of a response (or a 1xx)."""
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int, got {type(status).__name__}")
    if not 100 <= status <= 999:
        raise ValueError(f"status must be a 3-digit code, got {status}")
    return [(b":status", str(status).encode()), *normalize_headers(headers)]
