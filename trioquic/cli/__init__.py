"""The ``trioquic`` command line (also ``python -m trioquic``).

Subcommands:

* ``trioquic serve``: an HTTP/3 server (files, ``/bytes/N``, ``/echo``);
* ``trioquic get URL...``: fetch URLs over HTTP/3;
* ``trioquic echo-server``: a raw-QUIC echo server (ALPN ``trioquic-echo``);
* ``trioquic echo-client HOST PORT MESSAGE...``: echo each message on its own
  stream and print the replies;
* ``trioquic cert``: write a self-signed development certificate.

Failures exit with a non-zero status and a one-line reason on stderr.

Modules: ``_main`` (parser, entry points, ``cert``), ``_serve``, ``_get``,
``_echo`` (one per command, with what it alone needs), ``_common`` (what
several share). Imports go one way: ``_main`` imports the command modules,
which import ``_common``; none imports ``_main``.
"""

from ._main import build_parser as build_parser
from ._main import main as main
from ._main import run as run
