"""Starlette's ``StaticFiles`` over the directory named by the environment
variable ``BENCH_STATIC_ROOT`` (``benchmarks/static_files.py`` sets it), served
by ``trioquic_server.py --mode asgi --app static_app:app``."""

from __future__ import annotations

import os

from starlette.staticfiles import StaticFiles

app = StaticFiles(directory=os.environ.get("BENCH_STATIC_ROOT", "."), html=True)
