"""The qh3 engine's boundary: only ``trioquic/_qh3/`` imports qh3 (and only
``trioquic/_aioquic/`` imports aioquic), it changes nothing of qh3's own, and
every qh3 internal it relies on is listed and pinned
(``trioquic/_qh3/_pins.py``)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("qh3", reason="qh3 is not installed (pip install 'trioquic[qh3]')")

import qh3
from qh3._hazmat import QuicConnectionCore
from qh3.h3.connection import H3Connection, H3Stream
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection

from trioquic._qh3 import _pins

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "trioquic"
ENGINES = {"qh3": PACKAGE / "_qh3", "aioquic": PACKAGE / "_aioquic"}
ENGINE = ENGINES["qh3"]


def _trees() -> dict[str, ast.Module]:
    return {
        path.name: ast.parse(path.read_text(), str(path))
        for path in sorted(ENGINE.glob("*.py"))
        if path.name != "_pins.py"
    }


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at run time or for typing."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("library", sorted(ENGINES))
def test_only_its_engine_package_imports_a_quic_library(library: str) -> None:
    """qh3 only in ``_qh3``, aioquic only in ``_aioquic``: neither engine
    imports the other's library, nor does anything above the boundary."""
    home = ENGINES[library]
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] == library
        )
        for path in PACKAGE.rglob("*.py")
        if home not in path.parents
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_qh3_engine_imports_qh3() -> None:
    """(The boundary test above would pass vacuously on a renamed package.)"""
    imported = set().union(*(_imported_modules(p) for p in ENGINE.glob("*.py")))
    assert {m.split(".")[0] for m in imported} >= {"qh3"}


def test_pinned_methods_are_unchanged() -> None:
    """A qh3 release that changes a method trioquic overrides, copies or
    relies on fails here, naming it: read the override against the new
    upstream code, then update the hash in _pins.py (or _h3.H3_PINS)."""
    changed = _pins.changed_methods()
    assert changed == [], (
        f"qh3 {qh3.__version__} changed methods trioquic overrides or copies: {changed}"
    )


def test_the_pins_cover_the_transport_and_http3() -> None:
    from trioquic._qh3._h3 import H3_PINS

    pins = _pins.all_pins()
    assert set(_pins.PINNED_METHODS) <= set(pins)
    assert set(H3_PINS) <= set(pins)
    overrides = {
        "qh3.quic.connection:QuicConnection._create_core",
        "qh3.quic.connection:QuicConnection._create_tls",
        "qh3.quic.connection:QuicConnection._drain_core",
        "qh3.quic.tls_bridge:QuicTlsBridge.serialize_transport_parameters",
    }
    assert overrides <= set(pins)


def _upstream_members(owner: str) -> set[str]:
    """The methods and ``self.`` attributes a qh3 class defines (from its
    source), or its attributes (a native class)."""
    cls = getattr(importlib.import_module(_pins.OWNERS[owner]), owner)
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and isinstance(node.ctx, ast.Store)
        ):
            names.add(node.attr)
    return names


def _is_qh3_subclass(node: ast.ClassDef) -> bool:
    """Whether a class of ours derives from a qh3 class (its bases are
    names imported from qh3: ``QuicConnection`` as ``_Qh3Connection``...)."""
    upstream = {"_Qh3Connection", *_pins.OWNERS}
    return any(isinstance(b, ast.Name) and b.id in upstream for b in node.bases)


def _private_names() -> tuple[set[str], set[str]]:
    """(private names the engine uses, names its own plain classes define)."""
    used: set[str] = set()
    plain: set[str] = set()
    for tree in _trees().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                if node.name.startswith("_") and not node.name.endswith("__"):
                    used.add(node.name)  # an override is a use
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.endswith("__")
            ):
                used.add(node.attr)
        for cls in ast.walk(tree):
            if isinstance(cls, ast.ClassDef) and not _is_qh3_subclass(cls):
                for node in cls.body:
                    if isinstance(node, ast.FunctionDef):
                        plain.add(node.name)
    return used, plain


def test_private_names_list_is_complete_and_true() -> None:
    """Every private name of a qh3 class the engine uses is listed (a name a
    class of our own defines for itself is ours), and every listed one is
    used."""
    used, plain = _private_names()
    upstream = set().union(*(_upstream_members(owner) for owner in _pins.OWNERS))
    listed = set(_pins.PRIVATE_NAMES)
    unlisted = sorted((used & upstream) - plain - listed)
    assert unlisted == [], f"qh3 internals used but not listed: {unlisted}"
    stale = sorted(listed - used)
    assert stale == [], f"listed in _pins.PRIVATE_NAMES but not used: {stale}"


def test_private_names_exist_in_qh3() -> None:
    missing = [
        f"{owner}.{name}"
        for name, (owners, _) in _pins.PRIVATE_NAMES.items()
        for owner in owners
        if name not in _upstream_members(owner)
    ]
    assert missing == []
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    assert all(
        hasattr(quic, n)
        for n, (o, _) in _pins.PRIVATE_NAMES.items()
        if o == ("QuicConnection",)
    )
    h3 = H3Connection(quic)
    assert all(
        hasattr(h3, n)
        for n, (o, _) in _pins.PRIVATE_NAMES.items()
        if o == ("H3Connection",)
    )
    for module in _pins.PRIVATE_MODULES:
        importlib.import_module(module)


def _attributes_read_on(tree: ast.Module, holder: str) -> set[str]:
    """Attribute names read or set on a variable named ``holder`` (or on
    ``._core`` when ``holder`` is ``core``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if (isinstance(value, ast.Name) and value.id == holder) or (
            holder == "core"
            and isinstance(value, ast.Attribute)
            and value.attr == "_core"
        ):
            names.add(node.attr)
    return names


def test_native_core_attributes_are_listed_and_exist() -> None:
    used = set().union(*(_attributes_read_on(t, "core") for t in _trees().values()))
    assert used == set(_pins.CORE_ATTRIBUTES)
    missing = [n for n in _pins.CORE_ATTRIBUTES if not hasattr(QuicConnectionCore, n)]
    assert missing == []


def test_h3_stream_attributes_are_listed_and_exist() -> None:
    state = vars(H3Stream(0))
    used = _attributes_read_on(_trees()["_h3.py"], "stream") & set(state)
    assert used == set(_pins.H3_STREAM_ATTRIBUTES)


def _methods_of_our_classes() -> set[str]:
    """``Class.method`` for every method the engine's classes define."""
    return {
        f"{cls.name}.{node.name}"
        for tree in _trees().values()
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.FunctionDef)
    }


@pytest.mark.parametrize("name", sorted(_pins.PINNED_METHODS))
def test_every_pinned_method_names_the_code_that_relies_on_it(name: str) -> None:
    """A transport pin names the method of ours that overrides, copies or
    relies on it, and that method exists (a pin outliving its use fails)."""
    user = _pins.PINNED_METHODS[name][1]
    assert user in _methods_of_our_classes()


@pytest.mark.parametrize("name", sorted(_pins.all_pins()))
def test_every_pinned_method_is_used_by_the_engine(name: str) -> None:
    """An HTTP/3 pin names a method the engine overrides, wraps or calls
    (its name appears in the engine); a transport pin, one its user's
    class overrides or its module calls or relies on."""
    member = name.rpartition(":")[2].rpartition(".")[2]
    source = "".join(
        path.read_text() for path in ENGINE.glob("*.py") if path.name != "_pins.py"
    )
    assert member in source or name in _pins.PINNED_METHODS


GLOBALS_SCRIPT = textwrap.dedent(
    """
    import functools, importlib, pkgutil, sys
    import qh3

    names = ["qh3"] + [
        info.name for info in pkgutil.walk_packages(qh3.__path__, "qh3.")
    ]
    for name in names:
        importlib.import_module(name)

    def snapshot():
        state = {}
        for name in names:
            module = sys.modules[name]
            state[name] = {k: id(v) for k, v in vars(module).items()}
            for k, v in vars(module).items():
                if isinstance(v, type) and v.__module__ == name:
                    state[name + ":" + k] = {a: id(b) for a, b in vars(v).items()}
        return state

    before = snapshot()
    keep = [sys.modules[name] for name in list(sys.modules)]  # ids stay valid

    import trio
    import trioquic, trioquic.h3
    from trioquic.testing import MemoryNetwork, client_settings, server_settings

    async def main():
        network = MemoryNetwork(seed=1)
        server_socket = network.socket("10.0.0.1", 443)

        async def handler(request):
            await request.respond(200, body=b"hi")

        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(
                trioquic.h3.serve_http3, handler, 443,
                settings=server_settings(alpn_protocols=["h3"], engine="qh3"),
                sockets=[server_socket],
            ))
            for _ in range(2):
                async with trioquic.h3.open_http3_client(
                    "10.0.0.1", 443,
                    settings=client_settings(alpn_protocols=["h3"], engine="qh3"),
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


def test_trioquic_leaves_qh3_globals_unchanged() -> None:
    """``import trioquic`` and live HTTP/3 connections on the qh3 engine
    leave every global of every qh3 module, and every attribute of its
    classes, the same object it was."""
    result = subprocess.run(
        [sys.executable, "-c", GLOBALS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
