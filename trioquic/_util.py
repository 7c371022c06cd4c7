"""Small helpers for the package itself."""

from __future__ import annotations

from typing import Any


def fixup_module_metadata(module_name: str, namespace: dict[str, Any]) -> None:
    """Make the public names of ``module_name`` say where users find them:
    ``trioquic.QuicConnection``, not ``trioquic._connection.QuicConnection``
    (in reprs, tracebacks and the docs), as trio does for its own."""
    seen: set[int] = set()

    def fix(name: str, obj: Any, qualname: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if module is None or not module.startswith("trioquic."):
            return
        if "._" not in module + ".":
            return
        obj.__module__ = module_name
        if isinstance(obj, type):
            obj.__name__ = name
            obj.__qualname__ = qualname
            for attr_name, attr in obj.__dict__.items():
                if callable(attr) or isinstance(attr, type):
                    fix(attr_name, attr, f"{qualname}.{attr_name}")

    for name, obj in namespace.items():
        if not name.startswith("_") and (isinstance(obj, type) or callable(obj)):
            fix(name, obj, name)
