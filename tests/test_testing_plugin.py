"""trioquic's pytest plugin (trioquic/testing/_pytest_plugin.py): the
quic_network and quic_certificate fixtures, the quic_lossy marker, the
--quic-lossy and --quic-seed options and the replay line of a failure, run
through pytester on small test files of their own."""

from __future__ import annotations

import re

import pytest

from trioquic.testing import LinkConditions, MemoryNetwork
from trioquic.testing._pytest_plugin import LOSSY_PRESETS, seed_for

pytest_plugins = ["pytester"]

#: Test files print this with -s: the test's node id and its network.
SEEDS = """
import pytest

@pytest.fixture
def show(quic_network, request):
    yield
    print("NETWORK", request.node.nodeid, quic_network.seed,
          repr(quic_network.default_conditions))

def test_a(show):
    pass

def test_b(show):
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_c(show, n):
    pass
"""


@pytest.fixture
def tests_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    return pytester


def networks(result: pytest.RunResult) -> dict[str, tuple[int, LinkConditions]]:
    """The node id -> (seed, conditions) the SEEDS-style tests printed."""
    found = {}
    for line in result.outlines:
        match = re.search(r"NETWORK (\S+) (\d+) (LinkConditions\(.*\))", line)
        if match:
            conditions = eval(match[3], {"LinkConditions": LinkConditions})
            found[match[1]] = (int(match[2]), conditions)
    return found


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-s", "--strict-markers", *args)


def test_the_seed_derives_from_the_node_id(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests_dir.makepyfile(test_seeds=SEEDS)
    first = run(tests_dir)
    first.assert_outcomes(passed=4)
    seeds = {nodeid: seed for nodeid, (seed, _) in networks(first).items()}
    assert set(seeds) == {
        "test_seeds.py::test_a",
        "test_seeds.py::test_b",
        "test_seeds.py::test_c[1]",
        "test_seeds.py::test_c[2]",
    }
    assert len(set(seeds.values())) == 4  # each test its own
    assert seeds == {nodeid: seed_for(nodeid) for nodeid in seeds}
    again = run(tests_dir)
    assert {n: s for n, (s, _) in networks(again).items()} == seeds
    # Another process with another str hash: the same seeds (not hash()).
    monkeypatch.setenv("PYTHONHASHSEED", str(hash("trioquic") % 4000 + 1))
    other = tests_dir.runpytest_subprocess("-s")
    other.assert_outcomes(passed=4)
    assert {n: s for n, (s, _) in networks(other).items()} == seeds


def test_perfect_by_default_and_the_seed_option(tests_dir: pytest.Pytester) -> None:
    tests_dir.makepyfile(test_seeds=SEEDS)
    result = run(tests_dir, "--quic-seed=7")
    result.assert_outcomes(passed=4)
    found = networks(result)
    assert len(found) == 4
    assert set(found.values()) == {(7, LinkConditions())}


def test_the_plugin_needs_no_import_of_trioquic_testing(
    tests_dir: pytest.Pytester,
) -> None:
    # A fresh interpreter: the test module and the conftest name nothing of
    # trioquic, yet the fixtures are there (the plugin imported what it needs).
    tests_dir.makepyfile(
        conftest="""
        import sys
        def pytest_collection_finish():
            print("IMPORTED AT COLLECTION:", "trioquic.testing._network" in sys.modules)
        """,
        test_plain="""
        async def test_a_socket(quic_network, quic_certificate):
            sock = quic_network.socket("10.0.0.9", 9)
            await sock.send_batch([(b"hi", ("10.0.0.9", 9))])
            assert await sock.receive_batch() == [(b"hi", ("10.0.0.9", 9))]
            assert quic_certificate.certificate_path.exists()
        """,
    )
    result = tests_dir.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["IMPORTED AT COLLECTION: True"])


MARKED = """
import pytest
from trioquic.testing import LinkConditions

pytestmark = pytest.mark.quic_lossy("harsh")

def test_module_marker(quic_network):
    assert quic_network.default_conditions == LinkConditions(**PRESETS["harsh"])

@pytest.mark.quic_lossy
def test_bare_marker_is_mild(quic_network):
    assert quic_network.default_conditions == LinkConditions(**PRESETS["mild"])

@pytest.mark.quic_lossy(loss=0.25, delay=0.5)
def test_fields(quic_network):
    assert quic_network.default_conditions == LinkConditions(loss=0.25, delay=0.5)

@pytest.mark.quic_lossy("mild", loss=0.3)
def test_preset_with_changes(quic_network):
    assert quic_network.default_conditions == LinkConditions(
        **{**PRESETS["mild"], "loss": 0.3}
    )

@pytest.mark.quic_lossy(LinkConditions(jitter=0.2), corrupt=0.5)
def test_conditions_with_changes(quic_network):
    assert quic_network.default_conditions == LinkConditions(jitter=0.2, corrupt=0.5)

@pytest.mark.quic_lossy("perfect")
def test_perfect_beats_the_option(quic_network):
    assert quic_network.default_conditions == LinkConditions()

class TestClass:
    pytestmark = pytest.mark.quic_lossy(duplicate=0.5)

    def test_class_marker_beats_the_module(self, quic_network):
        assert quic_network.default_conditions == LinkConditions(duplicate=0.5)
"""


@pytest.mark.parametrize("option", [[], ["--quic-lossy=mild"]])
def test_the_marker(tests_dir: pytest.Pytester, option: list[str]) -> None:
    tests_dir.makepyfile(test_marked=f"PRESETS = {dict(LOSSY_PRESETS)!r}\n" + MARKED)
    result = run(tests_dir, *option)
    result.assert_outcomes(passed=7)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('"dreadful"', "*unknown preset 'dreadful'*"),
        ("0.1", "*a preset is named by a string*got float*"),
        ("lost=0.1", "*unexpected keyword argument 'lost'*LinkConditions fields*"),
        ('"mild", "harsh"', "*at most one positional argument*"),
        ("loss=2.0", "*loss must be between 0 and 1*"),
    ],
)
def test_a_bad_marker_says_what_to_do(
    tests_dir: pytest.Pytester, marker: str, message: str
) -> None:
    tests_dir.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.quic_lossy({marker})
        def test_bad(quic_network):
            pass
        """
    )
    result = run(tests_dir)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("option", "preset"),
    [("--quic-lossy", "mild"), ("--quic-lossy=harsh", "harsh")],
)
def test_the_option(tests_dir: pytest.Pytester, option: str, preset: str) -> None:
    tests_dir.makepyfile(test_seeds=SEEDS)
    # A bare --quic-lossy last, so that it does not take a path for a preset.
    result = run(tests_dir, "--quic-seed=3", option)
    result.assert_outcomes(passed=4)
    found = networks(result)
    assert len(found) == 4
    assert set(found.values()) == {(3, LinkConditions(**LOSSY_PRESETS[preset]))}
    assert LinkConditions(**LOSSY_PRESETS[preset]).loss > 0


def test_an_unknown_preset_on_the_command_line(tests_dir: pytest.Pytester) -> None:
    tests_dir.makepyfile(test_seeds=SEEDS)
    result = run(tests_dir, "--quic-lossy=dreadful")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid choice: 'dreadful'*"])


FAILING = """
import pytest
from trioquic.testing import LinkConditions

@pytest.mark.quic_lossy("harsh", bandwidth=125000)
def test_fails(quic_network):
    quic_network.set_link("10.0.0.1", "10.0.0.2", LinkConditions(loss=0.5))
    assert False, "deliberately"

def test_passes(quic_network):
    pass

def test_fails_without_the_network():
    assert False

@pytest.mark.parametrize("x", ["a b"])
def test_option_fails(quic_network, x):
    assert False
"""


def replay_lines(result: pytest.RunResult) -> list[str]:
    return [
        line.split("replay with: ", 1)[1]
        for line in result.outlines
        if "replay with: " in line
    ]


def rebuild(line: str) -> MemoryNetwork:
    namespace: dict[str, object] = {}
    exec("from trioquic.testing import *", namespace)
    exec(line, namespace)
    network = namespace["network"]
    assert isinstance(network, MemoryNetwork)
    return network


def test_a_failure_prints_the_replay_line(tests_dir: pytest.Pytester) -> None:
    tests_dir.makepyfile(test_failing=FAILING)
    result = run(tests_dir, "-rA", "-k", "not option")
    result.assert_outcomes(passed=1, failed=2)
    # One section, with the failing test that took the network; none for the
    # one that passed (-rA shows its report too) or the one without it.
    assert result.stdout.str().count("trioquic network") == 1
    nodeid = "test_failing.py::test_fails"
    seed = seed_for(nodeid)
    result.stdout.fnmatch_lines(
        [
            "*_ test_fails _*",
            "*- trioquic network -*",
            f"seed {seed} (from the test's id); conditions: "
            "@pytest.mark.quic_lossy('harsh', bandwidth=125000)",
            f"replay with: network = MemoryNetwork(seed={seed}, *",
            f"rerun with: pytest {nodeid} --quic-seed={seed}",
            "*_ test_fails_without_the_network _*",
        ]
    )
    [line] = replay_lines(result)
    network = rebuild(line)
    assert network.seed == seed
    assert network.default_conditions == LinkConditions(
        **LOSSY_PRESETS["harsh"], bandwidth=125000
    )
    # The per-link conditions the test set are in the line too.
    assert network.link_conditions("10.0.0.1", "10.0.0.2") == LinkConditions(loss=0.5)
    assert network.link_conditions("10.0.0.2", "10.0.0.1") == network.default_conditions
    assert line == f"network = {network.replay_code()}"


def test_the_rerun_repeats_the_option(tests_dir: pytest.Pytester) -> None:
    tests_dir.makepyfile(test_failing=FAILING)
    result = run(tests_dir, "-k", "option", "--quic-seed=11", "--quic-lossy=harsh")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "seed 11 (from --quic-seed); conditions: --quic-lossy=harsh",
            "rerun with: pytest 'test_failing.py::test_option_fails[a b]' "
            "--quic-seed=11 --quic-lossy=harsh",
        ]
    )
    [line] = replay_lines(result)
    network = rebuild(line)
    assert (network.seed, network.default_conditions) == (
        11,
        LinkConditions(**LOSSY_PRESETS["harsh"]),
    )


def test_a_replayed_seed_draws_the_same_losses(tests_dir: pytest.Pytester) -> None:
    # The test prints which of 200 datagrams arrived; --quic-seed with the
    # printed seed, under another test's name, draws the same ones.
    body = """
    import pytest
    import trio

    @pytest.mark.quic_lossy(loss=0.3, duplicate=0.1)
    async def {name}(quic_network, autojump_clock):
        receiver = quic_network.socket("10.0.0.1", 1)
        sender = quic_network.socket("10.0.0.2", 2)
        await sender.send_batch([(bytes([i]), ("10.0.0.1", 1)) for i in range(200)])
        arrived = []
        with trio.move_on_after(1):
            while True:
                arrived += [data[0] for data, _ in await receiver.receive_batch()]
        print("ARRIVED", arrived)
        assert False
    """
    tests_dir.makepyfile(
        test_original=body.format(name="test_original"),
        test_renamed=body.format(name="test_renamed"),
    )
    original = run(tests_dir, "test_original.py")
    original.assert_outcomes(failed=1)
    [line] = replay_lines(original)
    seed = rebuild(line).seed
    renamed = run(tests_dir, "test_renamed.py")
    replayed = run(tests_dir, "test_renamed.py", f"--quic-seed={seed}")

    def arrived(result: pytest.RunResult) -> str:
        [arrived] = re.findall(r"ARRIVED \[.*\]", result.stdout.str())
        return arrived

    assert arrived(replayed) == arrived(original)
    assert arrived(renamed) != arrived(original)  # another id, another seed
    assert 100 < len(arrived(original).split(",")) < 200


def test_with_servers_under_the_autojump_clock(tests_dir: pytest.Pytester) -> None:
    tests_dir.makepyfile(
        test_echo="""
        import pytest
        import trio
        from trioquic.testing import (
            open_memory_http3, open_memory_server, server_settings,
        )

        async def echo(connection):
            stream = await connection.accept_stream()
            async for data in stream:
                await stream.send_all(data)
            await stream.send_eof()

        @pytest.mark.quic_lossy("harsh")
        async def test_echo(quic_network, quic_certificate, autojump_clock):
            settings = server_settings(
                certificate=str(quic_certificate.certificate_path),
                private_key=str(quic_certificate.private_key_path),
            )
            start = trio.current_time()
            with trio.fail_after(60):
                async with open_memory_server(
                    echo, network=quic_network, server_settings=settings
                ) as server:
                    async with server.connect() as connection:
                        stream = await connection.open_stream()
                        await stream.send_all(b"ping" * 1000)
                        await stream.send_eof()
                        received = b""
                        async for data in stream:
                            received += data
            assert received == b"ping" * 1000
            assert trio.current_time() - start > 0.1  # the links' delays

        async def hello(request):
            await request.respond(200, [(b"content-type", b"text/plain")], b"hi")

        @pytest.mark.quic_lossy(loss=0.2, delay=0.03)
        async def test_http3(quic_network, autojump_clock):
            with trio.fail_after(60):
                async with open_memory_http3(hello, network=quic_network) as client:
                    for _ in range(5):
                        response = await client.request("GET", "/")
                        assert response.status == 200
                        assert await response.read() == b"hi"
            assert quic_network.statistics().lost > 0
        """
    )
    result = run(tests_dir)
    result.assert_outcomes(passed=2)


def test_it_can_be_turned_off(tests_dir: pytest.Pytester) -> None:
    tests_dir.makepyfile(
        test_off="""
        def test_without(quic_network):
            pass

        def test_plain():
            pass
        """
    )
    result = run(tests_dir, "-p", "no:trioquic")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'quic_network' not found*"])


def test_the_marker_and_options_are_registered(tests_dir: pytest.Pytester) -> None:
    result = run(tests_dir, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.quic_lossy(*"])
    result = run(tests_dir, "--help")
    result.stdout.fnmatch_lines(["*--quic-lossy*", "*--quic-seed=N*"])
