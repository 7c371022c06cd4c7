"""trioquic's pytest plugin: a seeded :class:`~trioquic.testing.MemoryNetwork`
per test, a development certificate, lossy runs on demand, and a replay line
when a test fails.

pytest loads it by itself wherever trioquic is installed (it is registered
under the ``pytest11`` entry point as ``trioquic``); ``-p no:trioquic``
turns it off. It provides:

Fixtures
    ``quic_network``: a :class:`~trioquic.testing.MemoryNetwork` for this test
    only, perfect (lossless, no delay) unless the test is made lossy, and
    seeded from the test's node id: the same test draws the same losses on
    every run and every machine, and two tests draw different ones.
    ``quic_certificate``: the
    :func:`~trioquic.testing.development_certificate` (session-scoped).

The marker ``@pytest.mark.quic_lossy(...)``
    Runs the test's ``quic_network`` over lossy links:
    ``@pytest.mark.quic_lossy`` (the ``"mild"`` preset),
    ``@pytest.mark.quic_lossy("harsh")`` (a preset by name),
    ``@pytest.mark.quic_lossy(loss=0.2, delay=0.05)`` (any
    :class:`~trioquic.testing.LinkConditions` field, the others perfect),
    ``@pytest.mark.quic_lossy("mild", loss=0.2)`` (a preset with changes), or
    ``@pytest.mark.quic_lossy(LinkConditions(...))``. The closest marker wins
    (a test's over its class's over its module's ``pytestmark``), and it wins
    over ``--quic-lossy``: ``@pytest.mark.quic_lossy("perfect")`` keeps a test
    that counts datagrams on a perfect network whatever the command line says.

Command-line options
    ``--quic-lossy[=PRESET]`` (``mild`` when no preset is named) runs every
    test that takes ``quic_network`` over lossy links; write it as
    ``--quic-lossy=harsh`` (with ``=``) or last, since a bare ``--quic-lossy``
    would take the next argument as the preset. ``--quic-seed=N`` gives every
    ``quic_network`` the seed ``N`` instead of the one derived from the test's
    id.

A failure's replay line
    When a test that took ``quic_network`` fails, its report gets a
    ``trioquic network`` section: the seed, where the conditions came from,
    one line of Python that rebuilds the same network (with the names of
    ``trioquic.testing`` in scope: per-link conditions set during the test
    included), and the command that reruns the test with the same seed.

The presets (:data:`LOSSY_PRESETS`):

=========== =========================================================
``perfect`` no delay, no loss (the default)
``mild``    10 ms delay, 5 ms jitter, 2 % loss
``harsh``   50 ms delay, 30 ms jitter (reordering), 10 % loss, 2 %
            duplication, 1 % corruption
=========== =========================================================

At pytest's start the plugin costs the import of the ``trioquic.testing``
package (its parent) and nothing more: the fixtures import what they use.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pytest

if TYPE_CHECKING:
    from .._certs import DevelopmentCertificate
    from ._network import LinkConditions, MemoryNetwork

#: The named link conditions ``--quic-lossy=PRESET`` and
#: ``@pytest.mark.quic_lossy("PRESET")`` accept: keyword arguments of
#: :class:`~trioquic.testing.LinkConditions` (applied to every link, both
#: directions).
LOSSY_PRESETS: Mapping[str, Mapping[str, float]] = {
    "perfect": {},
    "mild": {"delay": 0.01, "jitter": 0.005, "loss": 0.02},
    "harsh": {
        "delay": 0.05,
        "jitter": 0.03,
        "loss": 0.1,
        "duplicate": 0.02,
        "corrupt": 0.01,
    },
}

#: The preset a bare ``--quic-lossy`` or ``@pytest.mark.quic_lossy`` names.
DEFAULT_LOSSY_PRESET = "mild"

_MARKER = "quic_lossy"


@attrs.frozen(kw_only=True)
class _NetworkOrigin:
    """What the failure report needs to know about a test's network."""

    network: MemoryNetwork
    #: Where the seed came from ("from the test's id", "from --quic-seed").
    seed_source: str
    #: Where the conditions came from, for the report.
    source: str
    #: The ``--quic-lossy`` argument a rerun needs ("" if none).
    option: str


_ORIGIN = pytest.StashKey[_NetworkOrigin]()


def seed_for(nodeid: str) -> int:
    """The seed ``quic_network`` gets in the test with node id ``nodeid``
    (without ``--quic-seed``): 32 bits of its SHA-256, so it is the same on
    every run, interpreter and machine, unlike :func:`hash`."""
    digest = hashlib.sha256(nodeid.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def _preset(name: object, where: str) -> dict[str, Any]:
    if not isinstance(name, str):
        raise TypeError(
            f"{where}: a preset is named by a string ({', '.join(LOSSY_PRESETS)}), "
            f"got {type(name).__name__}"
        )
    try:
        return dict(LOSSY_PRESETS[name])
    except KeyError:
        raise ValueError(
            f"{where}: unknown preset {name!r}; use one of "
            f"{', '.join(map(repr, LOSSY_PRESETS))} or give LinkConditions fields "
            "as keywords"
        ) from None


def _marker_conditions(marker: pytest.Mark) -> tuple[LinkConditions, str]:
    """The conditions ``@pytest.mark.quic_lossy(...)`` asks for, and how to
    describe them."""
    from ._network import LinkConditions

    where = "@pytest.mark.quic_lossy"
    args, kwargs = marker.args, dict(marker.kwargs)
    if len(args) > 1:
        raise TypeError(
            f"{where} takes at most one positional argument (a preset name or a "
            f"LinkConditions), got {len(args)}"
        )
    written = ", ".join(
        [repr(arg) for arg in args]
        + [f"{key}={value!r}" for key, value in kwargs.items()]
    )
    description = f"{where}({written})" if written else where
    try:
        if args and isinstance(args[0], LinkConditions):
            return attrs.evolve(args[0], **kwargs), description
        if args:
            fields: dict[str, Any] = _preset(args[0], where)
        elif kwargs:
            fields = {}
        else:
            fields = _preset(DEFAULT_LOSSY_PRESET, where)
        fields.update(kwargs)
        return LinkConditions(**fields), description
    except TypeError as exc:
        if str(exc).startswith(where):
            raise
        raise TypeError(
            f"{where}: {exc}; its keywords are LinkConditions fields (delay, "
            "jitter, loss, duplicate, corrupt, queue_limit, bandwidth)"
        ) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trioquic", "trioquic's in-memory network")
    group.addoption(
        "--quic-lossy",
        nargs="?",
        const=DEFAULT_LOSSY_PRESET,
        default=None,
        choices=list(LOSSY_PRESETS),
        metavar="PRESET",
        help=(
            "run every test that takes the quic_network fixture over lossy "
            f"links: {', '.join(LOSSY_PRESETS)} (default {DEFAULT_LOSSY_PRESET}); "
            "a test's @pytest.mark.quic_lossy takes precedence"
        ),
    )
    group.addoption(
        "--quic-seed",
        type=int,
        default=None,
        metavar="N",
        help=(
            "seed every quic_network with N instead of a hash of the test's id "
            "(to replay a failure printed by a renamed or another test)"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "quic_lossy(preset='mild', **conditions): run the test's quic_network "
        "fixture over lossy links (a preset: "
        f"{', '.join(LOSSY_PRESETS)}; and/or LinkConditions fields as keywords)",
    )


@pytest.fixture
def quic_network(request: pytest.FixtureRequest) -> Iterator[MemoryNetwork]:
    """A :class:`~trioquic.testing.MemoryNetwork` of this test's own.

    Perfect by default; lossy under ``@pytest.mark.quic_lossy(...)`` or
    ``--quic-lossy`` (see the plugin's documentation).
    Its seed is 32 bits of the SHA-256 of the test's node id (the same on
    every run and machine), or ``--quic-seed``. Pass it on::

        async def test_echo(quic_network, autojump_clock):
            async with open_memory_server(echo, network=quic_network) as server:
                async with server.connect() as connection:
                    ...

    If the test fails, its report shows the line of Python that rebuilds this
    network (conditions changed during the test included) and how to rerun
    the test with the same seed.

    The network is created before the test's trio run starts, so its clock
    (for loss schedules) starts at the first datagram sent. It is
    function-scoped: a hypothesis ``@given`` test runs all its examples in
    one test and would share it (hypothesis refuses function-scoped
    fixtures); draw a network per example with
    ``trioquic.testing.strategies.networks()`` instead.
    """
    from ._network import LinkConditions, MemoryNetwork

    config = request.config
    forced_seed: int | None = config.getoption("--quic-seed")
    if forced_seed is None:
        seed = seed_for(request.node.nodeid)
        seed_source = "from the test's id"
    else:
        seed = forced_seed
        seed_source = "from --quic-seed"
    preset: str | None = config.getoption("--quic-lossy")
    marker = request.node.get_closest_marker(_MARKER)
    option = ""  # what a rerun must repeat of the command line
    if marker is not None:
        conditions, source = _marker_conditions(marker)
    elif preset is not None:
        conditions = LinkConditions(**_preset(preset, "--quic-lossy"))
        source = option = f"--quic-lossy={preset}"
    else:
        conditions = LinkConditions()
        source = "perfect (the default)"
    network = MemoryNetwork(seed=seed, conditions=conditions)
    request.node.stash[_ORIGIN] = _NetworkOrigin(
        network=network, seed_source=seed_source, source=source, option=option
    )
    yield network


@pytest.fixture(scope="session")
def quic_certificate() -> DevelopmentCertificate:
    """The development certificate (:func:`trioquic.testing.development_certificate`):
    a self-signed certificate for ``localhost``, generated once per process, the
    one :func:`~trioquic.testing.server_settings` serves and
    :func:`~trioquic.testing.client_settings` trusts. Its
    ``certificate_path`` and ``private_key_path`` go to
    :class:`~trioquic.QuicSettings` (``certificate=``, ``private_key=`` on a
    server; ``ca_certs=`` on a client)."""
    from ._server import development_certificate

    return development_certificate()


def replay_section(origin: _NetworkOrigin, nodeid: str) -> str:
    """The text of the ``trioquic network`` report section."""
    network = origin.network
    rerun = ["pytest", nodeid, f"--quic-seed={network.seed}"]
    if origin.option:
        rerun.append(origin.option)
    return (
        f"seed {network.seed} ({origin.seed_source}); conditions: {origin.source}\n"
        f"replay with: network = {network.replay_code()}\n"
        f"rerun with: {shlex.join(rerun)}\n"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        origin = item.stash.get(_ORIGIN, None)
        if origin is not None:
            report.sections.append(
                ("trioquic network", replay_section(origin, item.nodeid))
            )
    return report
