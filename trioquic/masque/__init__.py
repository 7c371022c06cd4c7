"""MASQUE CONNECT-UDP (RFC 9298): a UDP proxy over HTTP/3
(:func:`serve_masque_proxy`, :class:`MasqueProxy`), its client
(:func:`open_masque_client`, :func:`open_udp_tunnel`) and a local UDP
forwarder (:func:`run_udp_forwarder`). See docs/masque.rst."""

from .._util import fixup_module_metadata as _fixup
from ._client import MasqueClient as MasqueClient
from ._client import MasqueTunnelRefused as MasqueTunnelRefused
from ._client import ProxyLocation as ProxyLocation
from ._client import UdpTunnel as UdpTunnel
from ._client import open_masque_client as open_masque_client
from ._client import open_udp_tunnel as open_udp_tunnel
from ._forwarder import MasqueForwarder as MasqueForwarder
from ._forwarder import MasqueForwarderSettings as MasqueForwarderSettings
from ._forwarder import MasqueForwarderStatistics as MasqueForwarderStatistics
from ._forwarder import run_udp_forwarder as run_udp_forwarder
from ._policy import MasqueAccessPolicy as MasqueAccessPolicy
from ._policy import MasqueLimits as MasqueLimits
from ._policy import MasqueRefusal as MasqueRefusal
from ._proxy import MasqueProxy as MasqueProxy
from ._proxy import MasqueServer as MasqueServer
from ._proxy import serve_masque_proxy as serve_masque_proxy
from ._statistics import MasqueProxyStatistics as MasqueProxyStatistics
from ._statistics import TunnelStatistics as TunnelStatistics
from ._template import DEFAULT_PATH_TEMPLATE as DEFAULT_PATH_TEMPLATE
from ._template import DEFAULT_TEMPLATE as DEFAULT_TEMPLATE
from ._template import UriTemplate as UriTemplate

_fixup(__name__, globals())
del _fixup
