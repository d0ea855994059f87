"""Blocking calls made from the event loop, each on a thread of its own.

Not on the loop's shared executor (``asyncio.to_thread``): a call that never returns
there holds one of its few threads for good, and ``asyncio.run`` joins them all
before the daemon can exit. A call that may take long runs on a daemon thread (it
never holds the daemon's exit); one that must finish even then, such as killing an
exec session, on an ordinary thread (``daemon=False``: the exit waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def in_thread(fn: Callable[..., T], *args: Any, orphan: Callable[[T], object] | None = None,
              daemon: bool = True) -> asyncio.Future[T]:
    """A future for ``fn(*args)`` run on a new thread.

    ``orphan(result)`` releases a result nobody will take: the caller was cancelled
    (its future with it) or the loop is gone by the time ``fn`` returns. It runs on
    an ordinary thread, so that it finishes even if the daemon is exiting.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def release(result: T) -> None:
        if orphan is not None:
            with contextlib.suppress(RuntimeError):   # no new threads: the process is ending
                threading.Thread(target=orphan, args=(result,), name="release").start()

    def settle(result: T) -> None:   # on the loop
        if fut.cancelled():
            release(result)
        else:
            fut.set_result(result)

    def fail(err: BaseException) -> None:   # on the loop
        if not fut.cancelled():
            fut.set_exception(err)

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(fail, err)
            return
        try:
            loop.call_soon_threadsafe(settle, result)
        except RuntimeError:  # the loop is closed
            release(result)

    threading.Thread(target=work, daemon=daemon, name=getattr(fn, "__name__", "call")).start()
    return fut
