"""Development sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``,
``bench``.

Each session runs in a fresh virtual environment of its own, with the
project installed from this checkout. Extra arguments go to the tool, for
example ``nox -s tests -- -k echo -x``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.11", "3.12", "3.13"]
SOURCES = ["trioquic", "tests", "examples", "benchmarks", "docs", "noxfile.py"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (the same command as the README's)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting (``ruff check`` and ``ruff format --check``)."""
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def format(session: nox.Session) -> None:
    """Apply ruff's formatting and safe fixes."""
    session.install("ruff")
    session.run("ruff", "check", "--fix", *SOURCES)
    session.run("ruff", "format", *SOURCES)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package (configured in pyproject.toml)."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML documentation; any Sphinx warning is an error."""
    session.install("-e", ".", "sphinx", "furo", "sphinxcontrib-trio", "myst-parser")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


#: The benchmark suite, in the order ``nox -s bench`` runs it (see
#: docs/performance.md): each prints trioquic's figures beside its peers'
#: from the same run, and the ratios.
BENCHMARKS = [
    "benchmarks/ceiling.py",  # aioquic's state machines alone, in memory
    "benchmarks/bulk.py",  # 50 MB, raw QUIC, trioquic and aioquic asyncio
    "benchmarks/h3_bulk.py",  # 50 MB over HTTP/3, native client and server
    "benchmarks/h3_requests.py",  # 1 KB HTTP/3 requests, 1x50, 4x25, 10x10
    "benchmarks/handshakes.py",  # handshakes/s, sequential and 16 at once
    "benchmarks/idle_memory.py",  # memory per idle connection
]


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: trioquic beside aioquic's asyncio layer,
    hypercorn-trio and aioquic's in-memory ceiling, driven by ngtcp2's native
    gtlsclient/gtlsserver where installed. ``nox -s bench -- --quick`` runs
    the quick variants (a smoke test of every benchmark)."""
    session.install("-e", ".[test]")
    quick = ["--quick"] if "--quick" in session.posargs else []
    for script in BENCHMARKS:
        session.run("python", script, *quick)
