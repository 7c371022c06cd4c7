"""Serving from many processes on one machine, and from many machines.

:func:`serve_workers` runs a server in N worker processes that share one UDP
port (``SO_REUSEPORT``); a BPF program in the kernel gives every packet of a
connection to the worker that holds it, by the server ID in its connection ID
(QUIC-LB layout, :class:`~trioquic.QuicLbConfig`), so connections keep their
worker when their address changes. :func:`shared_keys` derives the keys that
every worker, and every machine behind one load balancer, must share. See the
scaling guide.
"""

from .._util import fixup_module_metadata as _fixup
from ._bpf import reuseport_program as reuseport_program
from ._keys import SharedKeys as SharedKeys
from ._keys import shared_keys as shared_keys
from ._supervisor import EXIT_CRASH_LOOP as EXIT_CRASH_LOOP
from ._supervisor import EXIT_OK as EXIT_OK
from ._supervisor import EXIT_UNCLEAN as EXIT_UNCLEAN
from ._supervisor import WorkerContext as WorkerContext
from ._supervisor import serve_workers as serve_workers

_fixup(__name__, globals())
del _fixup
