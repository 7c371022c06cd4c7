"""The ``lifespan`` scope: the application's startup and shutdown around
the servers' lifetime."""

from __future__ import annotations

import logging
import math
import types
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

import trio

from ._types import ASGIApp, Message

logger = logging.getLogger("trioquic.asgi")

LifespanMode = Literal["auto", "on", "off"]


class LifespanFailure(RuntimeError):
    """The application reported ``lifespan.startup.failed`` (or, with
    ``mode="on"``, could not run its lifespan at all): the server does not
    start."""


class Lifespan:
    """Runs the application's ``lifespan`` scope for the life of an
    ``async with`` block::

        async with Lifespan(app, state) as lifespan:
            ...  # startup is complete: serve
        # shutdown is complete (or timed out)

    ``mode``: ``"auto"`` (the default) goes on without lifespan, logged at
    info level, if the application raises or returns before it answered
    ``lifespan.startup`` (it does not support lifespan); ``"on"`` makes that
    a :exc:`LifespanFailure`; ``"off"`` never calls the application with
    a ``lifespan`` scope. ``lifespan.startup.failed`` is always a
    :exc:`LifespanFailure` (with the application's message). ``state`` is
    the dict the application fills in at startup (``scope["state"]``), and
    request scopes get a shallow copy of. Startup and shutdown each have
    their timeout (seconds, ``None``: none); a shutdown that takes longer
    is abandoned (logged), a startup that takes longer fails.
    """

    def __init__(
        self,
        app: ASGIApp,
        state: dict[str, Any] | None = None,
        *,
        mode: LifespanMode = "auto",
        startup_timeout: float | None = 60.0,
        shutdown_timeout: float | None = 30.0,
    ) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(
                f"lifespan mode must be 'auto', 'on' or 'off', got {mode!r}"
            )
        self.app = app
        self.state: dict[str, Any] = {} if state is None else state
        self.mode = mode
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        #: Whether the application took part (startup completed).
        self.supported = False
        self._startup_done = trio.Event()
        self._shutdown_requested = trio.Event()
        self._shutdown_done = trio.Event()
        self._told_startup = False
        self._told_shutdown = False
        self._startup_failed: str | None = None
        self._shutdown_failed: str | None = None
        self._error: BaseException | None = None
        self._manager: AbstractAsyncContextManager[None] | None = None
        self._task_scope = trio.CancelScope(shield=True)

    async def _receive(self) -> Message:
        if not self._told_startup:
            self._told_startup = True
            await trio.lowlevel.checkpoint()
            return {"type": "lifespan.startup"}
        await self._shutdown_requested.wait()
        if self._told_shutdown:
            await trio.sleep_forever()
        self._told_shutdown = True
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        await trio.lowlevel.checkpoint()
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.supported = True
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._startup_failed = str(message.get("message", ""))
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._shutdown_failed = str(message.get("message", ""))
            self._shutdown_done.set()
        else:
            raise ValueError(f"unexpected ASGI message {kind!r} in a lifespan scope")

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            # Shielded: on shutdown the application still receives
            # lifespan.shutdown when the caller is being cancelled; the
            # scope is cancelled once that is over (or failed).
            with self._task_scope:
                await self.app(scope, self._receive, self._send)
        except Exception as exc:
            self._error = exc
            if self._startup_done.is_set() and self.supported:
                logger.error("ASGI lifespan raised after startup", exc_info=exc)
        finally:
            # Whatever happened, nobody waits for it any longer.
            self._startup_done.set()
            self._shutdown_done.set()

    async def __aenter__(self) -> Lifespan:
        self._manager = self._running()
        await self._manager.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> bool | None:
        manager, self._manager = self._manager, None
        assert manager is not None, "Lifespan was not entered"
        return await manager.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        if self.mode == "off":
            yield
            return
        failure: BaseException | None = None
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run, name=f"lifespan {self.app!r}")
            try:
                await self._startup()
            except BaseException as exc:
                # Raised once the application's task is gone, outside the
                # nursery: the caller gets it as it is, not in a group.
                failure = exc
                self._task_scope.cancel()
            if failure is None:
                try:
                    yield
                except BaseException as exc:
                    body_error = exc
                finally:
                    with trio.CancelScope(shield=True):
                        await self._shutdown()
                    # The application's lifespan call ends here (cancelled
                    # if it goes on).
                    self._task_scope.cancel()
        if failure is not None:
            raise failure
        if body_error is not None:
            raise body_error

    async def _startup(self) -> None:
        timeout = math.inf if self.startup_timeout is None else self.startup_timeout
        with trio.move_on_after(timeout) as scope:
            await self._startup_done.wait()
        if scope.cancelled_caught:
            raise LifespanFailure(
                f"ASGI lifespan startup did not complete within {timeout} s"
            )
        if self._startup_failed is not None:
            raise LifespanFailure(
                "ASGI lifespan startup failed: "
                + (self._startup_failed or "(no message)")
            )
        if not self.supported:
            if self.mode == "on":
                raise LifespanFailure(
                    "the ASGI application does not support lifespan "
                    f"(it ended with {self._error!r}); use lifespan='auto' or 'off'"
                ) from self._error
            logger.info(
                "ASGI lifespan unsupported by the application, going on "
                "without it (%r)",
                self._error,
            )

    async def _shutdown(self) -> None:
        if not self.supported:
            return
        self._shutdown_requested.set()
        timeout = math.inf if self.shutdown_timeout is None else self.shutdown_timeout
        with trio.move_on_after(timeout) as scope:
            await self._shutdown_done.wait()
        if scope.cancelled_caught:
            logger.error("ASGI lifespan shutdown did not complete within %s s", timeout)
        elif self._shutdown_failed is not None:
            logger.error("ASGI lifespan shutdown failed: %s", self._shutdown_failed)
