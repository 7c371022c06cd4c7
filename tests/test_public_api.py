"""The public surface: every name exported once, from the module that holds
it; documented classes show their public module; the runtime has no import
cycles."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys
import types

import pytest

import trioquic
import trioquic.asgi
import trioquic.doq
import trioquic.h3
import trioquic.httpx
import trioquic.lowlevel
import trioquic.masque
import trioquic.tcp
import trioquic.testing
import trioquic.webtransport

PUBLIC_MODULES = [
    trioquic,
    trioquic.h3,
    trioquic.lowlevel,
    trioquic.testing,
    trioquic.tcp,
    trioquic.asgi,
    trioquic.httpx,
    trioquic.webtransport,
    trioquic.doq,
    trioquic.masque,
]


def _exported(module: types.ModuleType) -> list[str]:
    assert module.__file__ is not None
    names: list[str] = []
    for node in ast.parse(pathlib.Path(module.__file__).read_text()).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname is not None and alias.asname.startswith("_"):
                    continue  # a helper of the module itself, deleted after use
                assert alias.asname == alias.name, (
                    f"{module.__name__}: use 'import {alias.name} as {alias.name}'"
                )
                names.append(alias.name)
    return names


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_name_is_exported_once(module: types.ModuleType) -> None:
    names = _exported(module)
    assert len(names) == len(set(names)), "a name is exported twice"
    for name in names:
        assert hasattr(module, name)
        assert not name.startswith("_")
    # No private helper is left behind in the namespace.
    assert not [n for n in vars(module) if n in ("_fixup", "fixup_module_metadata")]


def test_no_name_is_exported_by_two_public_modules() -> None:
    seen: dict[str, str] = {}
    for module in PUBLIC_MODULES:
        if module is trioquic.testing:
            continue  # helpers that mirror the library's names by design
        for name in _exported(module):
            assert name not in seen, f"{name} in {seen.get(name)} and {module.__name__}"
            seen[name] = module.__name__


def test_core_names_users_look_for() -> None:
    for name in (
        "ApplicationOverQuic",
        "ConnectionIO",
        "QuicSettings",
        "serve_quic",
        "open_quic_connection",
        "QuicConnection",
        "QuicServer",
        "QuicStream",
        "StreamReset",
        "ConnectionClosed",
        "CloseReason",
        "CloseCause",
    ):
        assert hasattr(trioquic, name), name
    for name in ("InboundPacketRouter", "IoWorker", "RoutingTable", "DatagramSocket"):
        assert hasattr(trioquic.lowlevel, name), name
        assert not hasattr(trioquic, name), f"{name} belongs to trioquic.lowlevel"
    for name in ("H3Driver", "ServerH3Driver", "ClientH3Driver", "H3ErrorCode"):
        assert hasattr(trioquic.h3, name), name
    assert not [n for n in dir(trioquic.h3) if n.startswith("H3_")]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_classes_show_their_public_module(module: types.ModuleType) -> None:
    for name in _exported(module):
        obj = getattr(module, name)
        if isinstance(obj, (type, types.FunctionType)):
            assert obj.__module__ == module.__name__, name
            assert obj.__qualname__ == name
    assert repr(trioquic.QuicConnection) == "<class 'trioquic.QuicConnection'>"


def test_h3_error_codes_are_rfc_9114_s() -> None:
    codes = trioquic.h3.H3ErrorCode
    assert codes.NO_ERROR == 0x100 and codes.VERSION_FALLBACK == 0x110
    assert codes.DATAGRAM_ERROR == 0x33
    assert str(trioquic.h3.H3Error(0x10C, "x")) == (
        "HTTP/3 error H3_REQUEST_CANCELLED (0x10c): x"
    )
    assert trioquic.h3.H3Error(0x10C).error_code is codes.REQUEST_CANCELLED


def test_package_is_typed() -> None:
    assert (pathlib.Path(trioquic.__file__).parent / "py.typed").exists()


def _package_modules() -> list[str]:
    package = pathlib.Path(trioquic.__file__).parent
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts))
    return names


def test_every_module_imports_on_its_own() -> None:
    """Each module imports first in a fresh interpreter: no runtime import
    cycle that only works in one order."""
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('trioquic')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *_package_modules()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_no_runtime_import_cycles() -> None:
    """The graph of module-level imports inside the package (not those under
    ``if TYPE_CHECKING``) has no cycle."""
    package = pathlib.Path(trioquic.__file__).parent
    modules = set(_package_modules())
    graph: dict[str, set[str]] = {}
    for name in modules:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        tree = ast.parse(pathlib.Path(module.__file__).read_text())
        is_package = module.__file__.endswith("__init__.py")
        base = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in tree.body:  # module level only: lazy imports are fine
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = base.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*parts, node.module] if node.module else parts)
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    edges.add(candidate if candidate in modules else target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "trioquic"
            ):
                edges.add(str(node.module))
        graph[name] = {e for e in edges if e in modules and e != name}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert package.exists()
