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
    session.install("-e", ".", "sphinx", "furo", "sphinxcontrib-trio")
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


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark, trioquic beside its peers in the same run: bulk
    transfer (aioquic's asyncio layer), 1 KB HTTP/3 requests (aioquic's
    asyncio HTTP/3 server, hypercorn-trio; ngtcp2's gtlsclient when it is
    installed), memory per idle connection. ``nox -s bench -- --quick`` runs
    the quick variants."""
    session.install("-e", ".[test]")
    quick = "--quick" in session.posargs
    session.run("python", "benchmarks/bulk.py", *(["--quick"] if quick else []))
    session.run("python", "benchmarks/h3_requests.py", *(["--quick"] if quick else []))
    session.run(
        "python",
        "benchmarks/idle_memory.py",
        *(["--connections", "100"] if quick else []),
    )
