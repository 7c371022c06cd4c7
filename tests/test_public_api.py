"""The public surface: every name exported once, from the module that holds it."""

from __future__ import annotations

import ast
import pathlib

import trioquic


def test_every_public_name_is_exported_once() -> None:
    source = pathlib.Path(trioquic.__file__).read_text()
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                assert alias.asname == alias.name, (
                    f"use 'import {alias.name} as {alias.name}'"
                )
                names.append(alias.name)
    assert len(names) == len(set(names)), "a name is exported twice"
    for name in names:
        assert hasattr(trioquic, name)
        assert not name.startswith("_")


def test_core_names_users_look_for() -> None:
    for name in (
        "InboundPacketRouter",
        "IoWorker",
        "ApplicationOverQuic",
        "QuicSettings",
        "serve_quic",
        "open_quic_connection",
        "QuicConnection",
        "QuicStream",
        "StreamReset",
        "ConnectionClosed",
        "CloseReason",
    ):
        assert hasattr(trioquic, name), name


def test_package_is_typed() -> None:
    assert (pathlib.Path(trioquic.__file__).parent / "py.typed").exists()


def test_only_the_engine_seam_imports_aioquic() -> None:
    package = pathlib.Path(trioquic.__file__).parent
    allowed = {"_engine.py"}
    for path in package.rglob("*.py"):
        if path.name in allowed or "h3" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("aioquic"), path
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("aioquic"), path
