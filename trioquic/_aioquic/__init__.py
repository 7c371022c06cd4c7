"""The aioquic engine: the only code in trioquic that imports aioquic.

It implements trioquic's engine interface (:mod:`trioquic._engine`) over
aioquic's sans-io QUIC and HTTP/3 state machines, and adds what aioquic
lacks (see each module): receive credit on consumption and a bounded
outgoing datagram queue (``_connection``, ``_engine``); stateless reset
tokens derived from a static key, and the detection of the peer's resets;
the anti-amplification limit on the CONNECTION_CLOSE of an unvalidated path;
GOAWAY and our SETTINGS over aioquic's ``H3Connection`` (``_h3``); session
tickets as opaque bytes (``_tickets``); the Retry, refusal and INVALID_TOKEN
packets the router sends (``_endpoint``).

What it changes in aioquic lives on trioquic's own subclasses
(``TrioquicConnection``, ``BurstPacer``, ``_H3Connection``): importing
trioquic, or running any number of connections, leaves aioquic's modules as
they were. Every aioquic internal it relies on is listed in :mod:`._pins`,
and every upstream method it overrides or copies is pinned there by a hash
of its source, checked by the test suite.
"""

from ._endpoint import AioquicEndpoint as AioquicEndpoint
