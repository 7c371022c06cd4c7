"""``load_app``: find an ASGI application from ``"module:attribute"``, as
uvicorn does."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from ._types import ASGIApp, Receive, Scope, Send


class ASGI2App:
    """An ASGI 2 (two-call) application as an ASGI 3 one:
    ``instance = app(scope); await instance(receive, send)``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __repr__(self) -> str:
        return f"<ASGI2App {self.app!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def is_asgi2(app: Any) -> bool:
    """Whether ``app`` looks like an ASGI 2 application: a class whose
    instances are not awaitable (uvicorn's test). An ASGI 3 application
    is never a class: calling a class with ``(scope, receive, send)``
    would only build an instance."""
    return inspect.isclass(app) and not hasattr(app, "__await__")


def as_asgi3(app: Any) -> ASGIApp:
    """``app`` wrapped if it is an ASGI 2 application."""
    if not callable(app):
        raise TypeError(f"the ASGI application is not callable: {app!r}")
    if is_asgi2(app):
        return ASGI2App(app)
    return app  # type: ignore[no-any-return]


def load_app(
    spec: str, *, factory: bool = False, app_dir: str | os.PathLike[str] = "."
) -> ASGIApp:
    """Import an ASGI application from ``"MODULE:ATTRIBUTE"`` (the attribute
    may be a dotted path, ``"pkg.main:api.app"``), with ``app_dir``
    (default: the current directory) first on ``sys.path``; with
    ``factory``, the attribute is called without arguments and the result
    is the application. An ASGI 2 application (a class taking the scope) is
    wrapped. Raises :exc:`ValueError`, :exc:`ImportError` or
    :exc:`TypeError` with what to fix."""
    if not isinstance(spec, str):
        raise TypeError(f"the application is given as 'MODULE:ATTR', got {spec!r}")
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise ValueError(f"expected MODULE:ATTR (e.g. 'main:app'), got {spec!r}")
    directory = os.path.abspath(os.fspath(app_dir))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # the module itself failed to import something
        raise ImportError(
            f"could not import module {module_name!r} (looked in {directory} "
            "and sys.path): check the name, or pass app_dir / --app-dir"
        ) from exc
    app: Any = module
    for part in attrs.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise ValueError(
                f"module {module_name!r} has no attribute {attrs!r} "
                f"({part!r} not found)"
            ) from None
    if factory:
        if not callable(app):
            raise TypeError(f"the app factory {spec!r} is not callable")
        try:
            app = app()
        except TypeError as exc:
            raise TypeError(
                f"calling the app factory {spec!r} without arguments failed: {exc}"
            ) from exc
    elif not callable(app):
        raise TypeError(f"the app {spec!r} is not callable: is it an ASGI application?")
    if not callable(app):
        raise TypeError(
            f"the app factory {spec!r} returned {app!r}, which is not callable"
        )
    return as_asgi3(app)
