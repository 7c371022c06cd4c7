"""A minimal HTTP/3 server on qh3's asyncio layer (``qh3.asyncio.serve``,
``QuicConnectionProtocol`` + ``qh3.h3.connection.H3Connection``): the server
of ``aioquic_server.py``, built on qh3's modules instead of aioquic's (qh3
keeps aioquic's API), with the same routes and behaviour: ``GET /bytes/<n>``
answers ``n`` bytes, anything else 404; a body above 64 KiB is handed over as
64 KiB ``send_data`` calls in one go; session tickets are issued and kept.

qh3 has one congestion controller, CUBIC, so ``--cc`` must be ``cubic`` (the
default here); path MTU discovery is off, as for every peer (``_shared.py``).
The server exits after ``--lifetime`` seconds.

Run it::

    python benchmarks/_h3_peers/qh3_server.py --port 4433 --cert C --key K
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import QH3_CONGESTION_CONTROL, pin_to, server_parser
from aioquic_server import main

if __name__ == "__main__":
    parser = server_parser(__doc__.splitlines()[0])
    parser.set_defaults(cc=QH3_CONGESTION_CONTROL)
    arguments = parser.parse_args()
    pin_to(arguments.cpu)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(arguments, "qh3"))
