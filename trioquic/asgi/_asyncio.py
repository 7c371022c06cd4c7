"""``AsyncioApp``: an ASGI application that needs asyncio (Django) served
from trio, its calls run on an asyncio event loop in a thread of its own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
from typing import Any

import trio

from ._types import ASGIApp, Message, Receive, Scope, Send


def _settle(
    future: asyncio.Future[Any], value: Any, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class AsyncioApp:
    """Wraps an ASGI application written for asyncio (its code awaits
    asyncio primitives: ``asyncio.gather``, ``asyncio.create_task``,
    ``loop.run_in_executor``; Django's ``ASGIHandler`` does all three), so
    that trioquic's trio server can run it::

        app = AsyncioApp(get_asgi_application())

    Each application call runs as a task on one asyncio event loop, in a
    thread the wrapper starts at its first call; its ``receive`` and
    ``send`` are carried out in the trio task of the request (so
    backpressure, disconnects and cancellation behave as for a trio
    application). Cancelling the trio side cancels the asyncio task.
    :meth:`close` stops the loop and its thread (a later call starts a new
    one). Costs two thread hops per message: prefer a trio-compatible
    application (anything on AnyIO, e.g. Starlette or FastAPI) where you
    can.
    """

    def __init__(self, app: ASGIApp) -> None:
        if not callable(app):
            raise TypeError("app must be an ASGI 3 application")
        self.app = app
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<trioquic.asgi.AsyncioApp {self.app!r}>"

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="trioquic asyncio app", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stop the event loop and wait for its thread (blocking; call it
        once no request is running)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = self._event_loop()
        token = trio.lowlevel.current_trio_token()
        # asyncio side -> trio side: (operation, message, asyncio future).
        to_trio, from_asyncio = trio.open_memory_channel[
            tuple[str, Message | None, asyncio.Future[Any]]
        ](math.inf)
        finished = trio.Event()

        def ask(operation: str, message: Message | None) -> asyncio.Future[Any]:
            future = loop.create_future()
            item = (operation, message, future)
            try:
                token.run_sync_soon(to_trio.send_nowait, item)
            except trio.RunFinishedError:
                future.set_exception(OSError("the server has stopped"))
            return future

        async def asyncio_receive() -> Message:
            result: Message = await ask("receive", None)
            return result

        async def asyncio_send(message: Message) -> None:
            await ask("send", message)

        def on_done(_: concurrent.futures.Future[None]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(finished.set)

        async def carry_out(
            operation: str, message: Message | None, future: asyncio.Future[Any]
        ) -> None:
            value: Any = None
            error: BaseException | None = None
            try:
                if operation == "receive":
                    value = await receive()
                else:
                    assert message is not None
                    await send(message)
            except Exception as exc:
                error = exc
            loop.call_soon_threadsafe(_settle, future, value, error)

        async def serve(nursery: trio.Nursery) -> None:
            async for operation, message, future in from_asyncio:
                nursery.start_soon(carry_out, operation, message, future)

        call = asyncio.run_coroutine_threadsafe(
            self._call(scope, asyncio_receive, asyncio_send), loop
        )
        call.add_done_callback(on_done)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, nursery)
                await finished.wait()
                nursery.cancel_scope.cancel()
        finally:
            if not call.done():
                call.cancel()
            to_trio.close()
        call.result()  # the application's own exception, if it raised

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
