"""Development sessions: ``nox -s tests``, ``tests-qh3``, ``lint``,
``typecheck``, ``docs``, ``bench``.

Each session runs in a fresh virtual environment of its own, with the
project installed from this checkout. Extra arguments go to the tool, for
example ``nox -s tests -- -k echo -x``.
"""

from __future__ import annotations

import json
import os

import nox
import nox.command

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.11", "3.12", "3.13"]
SOURCES = [
    "trioquic",
    "tests",
    "examples",
    "benchmarks",
    "stress",
    "docs",
    "noxfile.py",
]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (the same command as the README's)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(name="tests-qh3", python=PYTHONS)
def tests_qh3(session: nox.Session) -> None:
    """Run the whole test suite again on the qh3 engine (TRIOQUIC_ENGINE=qh3:
    every QuicSettings without an explicit engine uses it; tests kept to
    aioquic skip with their reason)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs, env={"TRIOQUIC_ENGINE": "qh3"})


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
    session.install(
        "-e", ".[httpx,doq]", "sphinx", "furo", "sphinxcontrib-trio", "myst-parser"
    )
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
    "benchmarks/ceiling.py",  # aioquic's and qh3's state machines alone, in memory
    "benchmarks/bulk.py",  # 50 MB, raw QUIC, trioquic (both engines), aioquic, qh3
    "benchmarks/h3_bulk.py",  # 50 MB over HTTP/3, native client and server
    "benchmarks/h3_requests.py",  # 1 KB HTTP/3 requests, 1x50, 4x25, 10x10
    "benchmarks/handshakes.py",  # handshakes/s, sequential and 16 at once
    "benchmarks/idle_memory.py",  # memory per idle connection
    "benchmarks/loss_recovery.py",  # 10 MiB through early loss, both pairs
    "benchmarks/asgi_servers.py",  # one Starlette app: trioquic, hypercorn, anycorn
    "benchmarks/httpx_client.py",  # httpx over HTTP3Transport, Http3Client, niquests
    "benchmarks/static_files.py",  # built-in file server vs Starlette's StaticFiles
    "benchmarks/workers.py",  # serve --workers 1, 2, 4: scaling, rebinds, a kill
]


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: trioquic, on its aioquic and qh3 engines, beside
    aioquic's and qh3's asyncio layers, hypercorn-trio and each engine's
    in-memory ceiling, driven by ngtcp2's native gtlsclient/gtlsserver where
    installed; each script ends with the qh3 engine's goals, met or not
    (docs/performance.md). ``nox -s bench -- --quick`` runs the quick
    variants (a smoke test of every benchmark)."""
    session.install("-e", ".[test]")
    quick = ["--quick"] if "--quick" in session.posargs else []
    for script in BENCHMARKS:
        session.run("python", script, *quick)


@nox.session
def soak(session: nox.Session) -> None:
    """The bounded soak (stress/soak.py, docs/testing.rst): ten minutes of
    mixed HTTP/3 requests, bulk downloads, datagrams, connection churn and
    rebinding through a lossy hop against one server; fails if a request is
    lost or memory and tasks do not level off. ``nox -s soak -- --quick``
    runs for 30 s; other arguments go to the script."""
    session.install("-e", ".[test]")
    session.run("python", "stress/soak.py", *session.posargs)


#: ``nox -s fuzz``'s floor of examples for every hypothesis property test.
FUZZ_EXAMPLES = 10_000


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzzing at scale (docs/testing.rst, "Fuzzing"): stress/fuzz.py sends
    1,000,000 structure-aware mutated datagrams at a live HTTP/3 server on
    loopback while a transfer runs (15 minutes at most), then every
    hypothesis property test runs with at least 10,000 examples, drawn anew
    (not CI's derandomized profile), in parallel (about 40 minutes on two
    cores). ``--datagrams-only`` or ``--properties-only`` runs one part,
    ``--examples N`` sets the floor; other arguments go to stress/fuzz.py
    (``nox -s fuzz -- --seed 7``). Both parts run; either failing fails the
    session."""
    args = list(session.posargs)
    datagrams = "--properties-only" not in args
    properties = "--datagrams-only" not in args
    args = [a for a in args if a not in ("--properties-only", "--datagrams-only")]
    examples = FUZZ_EXAMPLES
    if "--examples" in args:
        index = args.index("--examples")
        examples = int(args[index + 1])
        del args[index : index + 2]
    session.install("-e", ".[test]", "pytest-xdist")
    failed = []
    if datagrams:
        if "--json" not in args:
            args += ["--json", os.path.join(session.create_tmp(), "fuzz.json")]
        summary = args[args.index("--json") + 1]
        # Exit status 1 is a finding: read from the summary, after the
        # properties have run too.
        session.run("python", "stress/fuzz.py", *args, success_codes=[0, 1])
        with open(summary) as fp:
            if not json.load(fp)["ok"]:
                failed.append(f"stress/fuzz.py reported findings (see {summary})")
    if properties:
        try:
            session.run(
                "pytest",
                "-m",
                "property",
                "-n",
                "auto",
                "--hypothesis-show-statistics",
                # Each test runs for many minutes here, by design: no
                # traceback dumps for the suite's 120 s hang guard.
                "-o",
                "faulthandler_timeout=0",
                env={
                    "TRIOQUIC_PROPERTY_MIN_EXAMPLES": str(examples),
                    "TRIOQUIC_HYPOTHESIS_PROFILE": "fuzz",
                },
            )
        except nox.command.CommandFailed:
            failed.append(f"property tests at {examples:,} examples each failed")
    if failed:
        session.error("; ".join(failed))
