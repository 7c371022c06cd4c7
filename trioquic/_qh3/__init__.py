"""The qh3 engine: the only code in trioquic that imports qh3.

It implements trioquic's engine interface (:mod:`trioquic._engine`) over
qh3's sans-io QUIC connection, whose packet core is native (Rust), and adds
what qh3 lacks (see each module): receive credit on consumption, as a gate
on the native core's event queue (``_connection``); the stream limits and
initial RTT trioquic's settings ask for; a stateless reset token derived
from the endpoint's static key; the causes of a close (``_engine``); session
tickets as opaque bytes (``_tickets``); the Retry, refusal and INVALID_TOKEN
packets the router sends (``_endpoint``, ``_initial``).

What it changes in qh3 lives on trioquic's own subclasses
(``Qh3Connection``, ``Qh3TlsBridge``): qh3's modules are left as they are.
Every qh3 internal it relies on is listed in :mod:`._pins`, and every
upstream method it overrides or copies is pinned there by a hash of its
source, checked by the test suite.
"""

from ._endpoint import Qh3Endpoint as Qh3Endpoint
