"""The URI template of a UDP proxy (RFC 9298 section 2): expanding it on the
client, matching a request's ``:path`` against it on the proxy.

Supported: RFC 6570 simple expansion (``{var}``) anywhere in the path or
the query, and form-style query expansion (``{?var,var}``). The variables
are ``target_host`` and ``target_port`` (both required) and, in the
authority only, ``host`` and ``port`` (the proxy's own).
"""

from __future__ import annotations

import re
import urllib.parse

import attrs

#: RFC 9298 section 3's well-known location.
DEFAULT_PATH_TEMPLATE = "/.well-known/masque/udp/{target_host}/{target_port}/"
#: The default template with the proxy's authority as variables.
DEFAULT_TEMPLATE = "https://{host}:{port}" + DEFAULT_PATH_TEMPLATE

_TARGET_VARIABLES = ("target_host", "target_port")
_EXPRESSION = re.compile(r"\{([?]?)([A-Za-z0-9_,]+)\}")
#: RFC 3986 unreserved characters: everything else is percent-encoded in a
#: simple expansion (so an IPv6 literal's ``:`` becomes ``%3A``).
_UNRESERVED = "-._~"


def _encode(value: str) -> str:
    return urllib.parse.quote(value, safe=_UNRESERVED)


def _check_expressions(text: str, allowed: set[str], where: str) -> list[str]:
    names: list[str] = []
    for match in _EXPRESSION.finditer(text):
        for name in match.group(2).split(","):
            if name not in allowed:
                raise ValueError(
                    f"URI template variable {{{name}}} is not allowed in the {where}: "
                    f"use {', '.join('{' + n + '}' for n in sorted(allowed))}"
                )
            names.append(name)
    leftover = _EXPRESSION.sub("", text)
    if "{" in leftover or "}" in leftover:
        raise ValueError(
            f"malformed URI template expression in {text!r}: use {{name}} or "
            "{?name,name}"
        )
    return names


@attrs.frozen
class UriTemplate:
    """A UDP proxy's URI template, e.g. the default
    ``https://{host}:{port}/.well-known/masque/udp/{target_host}/{target_port}/``,
    ``https://proxy.example:4433/masque?h={target_host}&p={target_port}`` or
    a path alone (``/masque{?target_host,target_port}``).

    Raises :exc:`ValueError` when ``target_host`` or ``target_port`` is
    missing, a variable is unknown, or the template is not an ``https``
    URL or an absolute path."""

    template: str
    #: ``https://host:port`` or ``""`` (a path template): may hold {host}, {port}.
    origin: str = attrs.field(init=False)
    #: The path and query part, with the target variables.
    path_template: str = attrs.field(init=False)
    _pattern: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)
    _groups: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        template = self.template
        if not isinstance(template, str):
            raise TypeError(f"a URI template is a str, got {type(template).__name__}")
        if template.startswith("/"):
            origin, path = "", template
        elif template.startswith("https://"):
            rest = template[len("https://") :]
            slash = rest.find("/")
            if slash < 0 or slash == 0:
                raise ValueError(
                    f"URI template {template!r} has no path: e.g. "
                    f"https://proxy.example:4433{DEFAULT_PATH_TEMPLATE}"
                )
            origin, path = "https://" + rest[:slash], rest[slash:]
            _check_expressions(origin, {"host", "port"}, "authority")
        else:
            raise ValueError(
                f"URI template {template!r} must be an https:// URL or a path "
                "starting with /"
            )
        if "#" in path:
            raise ValueError(f"URI template {template!r} must not have a fragment")
        names = _check_expressions(path, set(_TARGET_VARIABLES), "path or query")
        for name in _TARGET_VARIABLES:
            if names.count(name) != 1:
                raise ValueError(
                    f"URI template {template!r} must contain {{{name}}} exactly "
                    f"once (RFC 9298 section 2), e.g. {DEFAULT_PATH_TEMPLATE}"
                )
        pattern, groups = self._compile(path)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "path_template", path)
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "_groups", groups)

    @staticmethod
    def _compile(path: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
        parts: list[str] = []
        groups: list[str] = []
        position = 0
        query_started = "?" in path.split("{", 1)[0]
        for match in _EXPRESSION.finditer(path):
            literal = path[position : match.start()]
            if "?" in literal:
                query_started = True
            parts.append(re.escape(literal))
            value = "([^/?#&]*)" if query_started else "([^/?#]*)"
            if match.group(1) == "?":
                for index, name in enumerate(match.group(2).split(",")):
                    parts.append(re.escape(("?" if index == 0 else "&") + name + "="))
                    parts.append("([^&#]*)")
                    groups.append(name)
                query_started = True
            else:
                parts.append(value)
                groups.append(match.group(2))
            position = match.end()
        parts.append(re.escape(path[position:]))
        return re.compile("".join(parts)), tuple(groups)

    # -- client side -------------------------------------------------------------

    def expand_path(self, target_host: str, target_port: int) -> str:
        """The request's ``:path`` for a target (percent-encoded)."""
        host = str(target_host)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # an IPv6 literal goes without brackets
        if not host:
            raise ValueError("the target host is empty")
        port = _check_port_number(target_port)
        values = {"target_host": _encode(host), "target_port": str(port)}

        def replace(match: re.Match[str]) -> str:
            names = match.group(2).split(",")
            if match.group(1) == "?":
                return "?" + "&".join(f"{n}={values[n]}" for n in names)
            return values[names[0]]

        return _EXPRESSION.sub(replace, self.path_template)

    def expand(
        self, target_host: str, target_port: int, *, host: str = "", port: int = 443
    ) -> str:
        """The whole URL for a target; ``host`` and ``port`` fill the
        authority's variables, if it has any."""
        origin = self.origin
        if not origin:
            if not host:
                raise ValueError("this template is a path only: give the proxy's host")
            shown = f"[{host}]" if ":" in host else host
            origin = f"https://{shown}:{port}"
        else:
            shown = f"[{host}]" if ":" in host else host
            origin = origin.replace("{host}", shown).replace("{port}", str(port))
        return origin + self.expand_path(target_host, target_port)

    # -- proxy side ---------------------------------------------------------------

    def match(self, path: str) -> tuple[str, str] | None:
        """``(target_host, target_port)`` (percent-decoded text, the port not
        yet checked) when ``path`` is an expansion of this template, else
        ``None``."""
        found = self._pattern.fullmatch(path)
        if found is None:
            return None
        values = dict(zip(self._groups, found.groups(), strict=True))
        host = urllib.parse.unquote(values["target_host"], errors="strict")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, urllib.parse.unquote(values["target_port"])


def _check_port_number(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"a port is an int, got {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"a UDP target port is 1 to 65535, got {port}")
    return port


def parse_port(text: str) -> int | None:
    """A target port from a matched template, or ``None`` if it is not a
    decimal number in 1..65535."""
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None
