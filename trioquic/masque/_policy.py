"""Which UDP targets a proxy relays to (:class:`MasqueAccessPolicy`), its
limits (:class:`MasqueLimits`), and a refusal as an HTTP answer
(:class:`MasqueRefusal`, with an RFC 9209 ``proxy-status``)."""

from __future__ import annotations

import ipaddress
import socket as _stdlib_socket
from typing import Any

import attrs
import trio

from .._validators import int_at_least, seconds

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Refused unless an allowed target (an address or network) covers them:
#: loopback, private, link-local, multicast, unspecified, and the other
#: special-purpose ranges (what :attr:`ipaddress.IPv4Address.is_global` is
#: False for), v4 and v6.


def _is_special(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return _is_special(address.ipv4_mapped)
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or not address.is_global
    )


@attrs.frozen
class MasqueRefusal:
    """Why a tunnel was refused: the HTTP status and the RFC 9209
    ``proxy-status`` error (``None``: no proxy-status), and a detail for
    logs."""

    status: int
    error: str | None
    detail: str = ""

    def headers(self, proxy_name: str = "trioquic") -> list[tuple[bytes, bytes]]:
        """The response fields: ``proxy-status`` when there is an error."""
        if self.error is None:
            return []
        value = f"{proxy_name}; error={self.error}"
        if self.detail:
            escaped = self.detail.replace("\\", "\\\\").replace('"', '\\"')
            value += f'; details="{escaped}"'
        return [(b"proxy-status", value.encode("ascii", "replace"))]


def _targets(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise TypeError(
                "MasqueAccessPolicy.targets holds host names, IP addresses or "
                f"CIDR networks as strings, got {item!r}"
            )
        out.append(item.strip().lower())
    return tuple(out)


def _one_range(item: Any) -> tuple[int, int]:
    if isinstance(item, bool):
        raise TypeError(f"a port is an int, got {item!r}")
    if isinstance(item, int):
        low = high = item
    elif isinstance(item, str):
        low_text, _, high_text = item.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if high_text else low
        except ValueError:
            raise ValueError(
                f"MasqueAccessPolicy.ports: {item!r} is not a port or a range "
                "like '1000-2000'"
            ) from None
    elif isinstance(item, tuple) and len(item) == 2:
        low, high = item
    else:
        raise TypeError(
            "MasqueAccessPolicy.ports holds ports (53), ranges ('1000-2000') or "
            f"(low, high) pairs, got {item!r}"
        )
    if not (1 <= low <= high <= 65535):
        raise ValueError(
            f"MasqueAccessPolicy.ports: {item!r} is not within 1-65535 (low <= high)"
        )
    return int(low), int(high)


def _ports(value: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(value, int | str):
        value = (value,)
    return tuple(_one_range(item) for item in value)


@attrs.frozen
class MasqueAccessPolicy:
    """Which targets a UDP proxy relays to.

    ``targets``: host names (``dns.example``, or ``*.example`` for its
    subdomains), IP addresses and CIDR networks; empty (the default) allows
    any host name or address. ``ports``: ports and ranges (``53``,
    ``"1000-2000"``, ``(1000, 2000)``); by default all. Names are resolved
    and the check applies to the resolved address: loopback, private,
    link-local, multicast, unspecified and other special-purpose addresses
    (v4 and v6) are refused unless an address or network in ``targets``
    covers them (``127.0.0.1``, ``10.0.0.0/8``) or ``allow_private`` is set.
    A listed name never lets a special address through: a name that
    resolves to 127.0.0.1 is refused."""

    targets: tuple[str, ...] = attrs.field(default=(), converter=_targets)
    ports: tuple[tuple[int, int], ...] = attrs.field(
        default=((1, 65535),), converter=_ports
    )
    allow_private: bool = attrs.field(default=False)
    #: Seconds a name resolution may take; then ``504`` ``dns_timeout``.
    resolve_timeout: float = attrs.field(default=5.0, validator=seconds(optional=False))
    _networks: tuple[IPNetwork, ...] = attrs.field(init=False, repr=False, eq=False)
    _names: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.allow_private, bool):
            raise TypeError("MasqueAccessPolicy.allow_private must be a bool")
        networks: list[IPNetwork] = []
        names: list[str] = []
        for target in self.targets:
            text = target[1:-1] if target.startswith("[") else target
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            if "/" in text or not _looks_like_name(text):
                raise ValueError(
                    f"MasqueAccessPolicy.targets: {target!r} is not a host name, "
                    "an IP address or a CIDR network (e.g. 192.0.2.0/24)"
                )
            names.append(text.rstrip("."))
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_names", tuple(names))

    # -- decisions ------------------------------------------------------------------

    def port_allowed(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.ports)

    def _name_listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for name in self._names:
            if name.startswith("*."):
                if host.endswith(name[1:]):
                    return True
            elif host == name:
                return True
        return False

    def check_target(self, host: str, port: int) -> MasqueRefusal | None:
        """The decision before resolution: is this host and port allowed?"""
        if not self.port_allowed(port):
            return MasqueRefusal(403, "http_request_denied", f"port {port} not allowed")
        literal = _ip_literal(host)
        if not self.targets:
            return None
        if literal is not None:
            if any(literal in network for network in self._networks):
                return None
            return MasqueRefusal(
                403, "destination_ip_prohibited", f"{literal} not allowed"
            )
        if self._name_listed(host) or self._networks:
            # A name outside the listed names may still resolve into an
            # allowed network: decided on the address.
            return None
        return MasqueRefusal(403, "http_request_denied", f"{host} not allowed")

    def check_address(self, host: str, address: IPAddress) -> MasqueRefusal | None:
        """The decision on a resolved address."""
        explicit = any(address in network for network in self._networks)
        if self.targets and not explicit and not self._name_listed(host):
            return MasqueRefusal(
                403, "destination_ip_prohibited", f"{address} not allowed"
            )
        if _is_special(address) and not explicit and not self.allow_private:
            # RFC 9209 section 2.3.5: 502 for destination_ip_prohibited.
            return MasqueRefusal(
                502, "destination_ip_prohibited", f"{address} is not a public address"
            )
        return None

    async def resolve(
        self, host: str, port: int
    ) -> tuple[tuple[int, Any], None] | tuple[None, MasqueRefusal]:
        """Check and resolve a target: ``((family, sockaddr), None)`` or
        ``(None, refusal)``. Every candidate address is checked; the first
        allowed one is used. Cancellation is honoured while resolving."""
        refusal = self.check_target(host, port)
        if refusal is not None:
            await trio.lowlevel.checkpoint()
            return None, refusal
        try:
            with trio.fail_after(self.resolve_timeout):
                infos = await trio.socket.getaddrinfo(
                    host, port, type=_stdlib_socket.SOCK_DGRAM
                )
        except trio.TooSlowError:
            return None, MasqueRefusal(504, "dns_timeout", f"resolving {host}")
        except (OSError, UnicodeError) as exc:
            # RFC 9209 section 2.3.2: 502 for dns_error.
            rcode = "NXDOMAIN" if isinstance(exc, _stdlib_socket.gaierror) else ""
            detail = f"{host}: {rcode or exc}"
            return None, MasqueRefusal(502, "dns_error", detail)
        first: MasqueRefusal | None = None
        for family, _type, _proto, _name, sockaddr in infos:
            if family not in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
                continue
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            refusal = self.check_address(host, address)
            if refusal is None:
                return (family, sockaddr), None
            first = first or refusal
        if first is None:
            first = MasqueRefusal(
                502, "destination_ip_unroutable", f"{host} has no IP address"
            )
        return None, first


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _looks_like_name(text: str) -> bool:
    text = text[2:] if text.startswith("*.") else text
    labels = text.rstrip(".").split(".")
    return bool(text) and all(
        0 < len(label) <= 63
        and all(c.isalnum() or c in "-_" for c in label)
        and label.isascii()
        for label in labels
    )


def _payload(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    int_at_least(1)(instance, attribute, value)
    if value > 65527:
        raise ValueError(
            f"MasqueLimits.max_payload_size is at most 65527 (a UDP payload), "
            f"got {value}"
        )


@attrs.frozen(kw_only=True)
class MasqueLimits:
    """Limits of a UDP proxy (or of a client's tunnels); every field is
    validated when the object is built."""

    #: Tunnels one QUIC connection may have open at once; beyond it ``429``.
    max_tunnels_per_connection: int = attrs.field(default=16, validator=int_at_least(1))
    #: Tunnels the whole server may have open at once; beyond it ``503``.
    max_tunnels: int = attrs.field(default=1024, validator=int_at_least(1))
    #: Datagrams queued per tunnel: the client's receive queue, the proxy's
    #: capsules to the client (HTTP datagrams to the target go straight to
    #: its socket); when a queue is full the new datagram is dropped (and
    #: counted): queues never grow.
    datagram_queue_size: int = attrs.field(default=64, validator=int_at_least(1))
    #: Seconds without a datagram either way after which a tunnel ends
    #: cleanly (the stream is finished); None: no timeout.
    idle_timeout: float | None = attrs.field(
        default=60.0, validator=seconds(optional=True)
    )
    #: Largest UDP payload relayed; larger ones are dropped (and counted).
    max_payload_size: int = attrs.field(default=65527, validator=_payload)
    #: Largest capsule accepted on a tunnel's stream (a larger one resets
    #: the stream with H3_GENERAL_PROTOCOL_ERROR).
    max_capsule_size: int = attrs.field(default=65536 + 16, validator=int_at_least(16))

    def __attrs_post_init__(self) -> None:
        if self.max_tunnels_per_connection > self.max_tunnels:
            raise ValueError(
                "MasqueLimits.max_tunnels_per_connection "
                f"({self.max_tunnels_per_connection}) cannot exceed max_tunnels "
                f"({self.max_tunnels})"
            )
