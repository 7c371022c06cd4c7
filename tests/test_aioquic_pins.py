"""The engine boundary: only ``trioquic/_aioquic/`` imports aioquic, it changes
nothing of aioquic's own, and every aioquic internal it relies on is listed
and pinned (``trioquic/_aioquic/_pins.py``)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import aioquic
import pytest
from aioquic.h3.connection import H3Connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoContext
from aioquic.quic.stream import QuicStreamSender

from trioquic._aioquic import _pins

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "trioquic"
ENGINE = PACKAGE / "_aioquic"


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at run time or for typing."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_only_the_engine_package_imports_aioquic() -> None:
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] == "aioquic"
        )
        for path in PACKAGE.rglob("*.py")
        if ENGINE not in path.parents
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_pinned_methods_are_unchanged() -> None:
    """An aioquic release that changes a method trioquic overrides or copies
    fails here, naming it: read the override against the new upstream code,
    then update the hash in _pins.py."""
    changed = _pins.changed_methods()
    assert changed == [], (
        f"aioquic {aioquic.__version__} changed methods trioquic overrides or "
        f"copies: {changed}"
    )


def _engine_attribute_names() -> tuple[set[str], set[str]]:
    """(private attribute names the engine reads or writes, names it defines)."""
    used: set[str] = set()
    defined: set[str] = set()
    for path in ENGINE.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                defined.add(node.name)
                if node.name.startswith("_") and not node.name.endswith("__"):
                    used.add(node.name)  # an override is a use
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
            elif isinstance(node, ast.Attribute):
                name = node.attr
                if name.startswith("_") and not name.endswith("__"):
                    used.add(name)
                    if (
                        isinstance(node.ctx, ast.Store)
                        and isinstance(node.value, ast.Name)
                        and node.value.id in ("self", "cls")
                    ):
                        defined.add(name)
            elif isinstance(node, ast.Constant) and node.value == (
                "_QuicConnection__frame_handlers"
            ):
                used.add(node.value)
    return used, defined


def test_private_names_list_is_complete_and_true() -> None:
    used, defined = _engine_attribute_names()
    listed = set(_pins.PRIVATE_NAMES)
    ours = defined - listed
    unlisted = sorted(used - ours - listed)
    assert unlisted == [], f"aioquic internals used but not listed: {unlisted}"
    stale = sorted(listed - used)
    assert stale == [], f"listed in _pins.PRIVATE_NAMES but not used: {stale}"


def test_private_names_exist_in_aioquic() -> None:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    owners: dict[str, object] = {
        "QuicConnection": quic,
        "QuicPacketRecovery": quic._loss,
        "QuicStreamSender": QuicStreamSender(stream_id=0, writable=True),
        "CryptoContext": CryptoContext(),
        "H3Connection": H3Connection(quic),
    }
    missing = [
        f"{owner}.{name}"
        for name, (owner, _) in _pins.PRIVATE_NAMES.items()
        if not hasattr(owners[owner], name)
    ]
    assert missing == []
    for module in _pins.PRIVATE_MODULES:
        __import__(module)


GLOBALS_SCRIPT = textwrap.dedent(
    """
    import functools, importlib, pkgutil, sys
    import aioquic

    names = [
        info.name for info in pkgutil.walk_packages(aioquic.__path__, "aioquic.")
    ]
    for name in names:
        importlib.import_module(name)

    def snapshot():
        state = {}
        for info_name in names:
            module = sys.modules[info_name]
            state[info_name] = {k: id(v) for k, v in vars(module).items()}
            for k, v in vars(module).items():
                if isinstance(v, type) and v.__module__ == info_name:
                    state[info_name + ":" + k] = {
                        a: id(b) for a, b in vars(v).items()
                    }
        return state

    before = snapshot()
    keep = [sys.modules[name] for name in list(sys.modules)]  # ids stay valid

    import trio
    import trioquic, trioquic.h3
    from trioquic.testing import (
        MemoryNetwork, client_settings, server_settings,
    )

    async def main():
        network = MemoryNetwork(seed=1)
        server_socket = network.socket("10.0.0.1", 443)

        async def handler(request):
            await request.respond(200, body=b"hi")

        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(
                trioquic.h3.serve_http3, handler, 443,
                settings=server_settings(alpn_protocols=["h3"], engine="aioquic"),
                sockets=[server_socket],
            ))
            for _ in range(2):
                async with trioquic.h3.open_http3_client(
                    "10.0.0.1", 443,
                    settings=client_settings(
                        alpn_protocols=["h3"], engine="aioquic"
                    ),
                    socket=network.socket("10.0.0.2"),
                ) as client:
                    response = await client.request("GET", "/")
                    assert await response.read() == b"hi"
            nursery.cancel_scope.cancel()

    trio.run(main)
    after = snapshot()
    changed = sorted(
        name for name, values in before.items() if after.get(name) != values
    )
    print("CHANGED", changed)
    sys.exit(1 if changed else 0)
    """
)


def test_trioquic_leaves_aioquic_globals_unchanged() -> None:
    """``import trioquic`` and live HTTP/3 connections leave every global of
    every aioquic module, and every attribute of its classes, the same
    object it was."""
    result = subprocess.run(
        [sys.executable, "-c", GLOBALS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(_pins.PINNED_METHODS))
def test_every_pinned_method_is_listed_or_overridden(name: str) -> None:
    """A pin names a method that exists and that the engine really
    overrides, copies or relies on (its name appears in the engine)."""
    method = name.rpartition(".")[2]
    source = "".join(
        path.read_text() for path in ENGINE.glob("*.py") if path.name != "_pins.py"
    )
    assert method in source
