"""The two asyncio patterns every provider needs: run a coroutine from sync code, and poll until ready.

cumulo's providers talk to clouds, gateways and ssh hosts with asyncio, but are
called from plain functions too (the CLI, the reaper, a price refresh), often
inside a Jupyter kernel whose loop is already running. And a launch is a chain
of "ask again until it is ready or the deadline passes". Each was written out
by hand in several places; these are the one copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["blocking", "until"]

T = TypeVar("T")


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running loop (a notebook cell).

    With no running loop this is ``asyncio.run``; inside one, the coroutine runs
    on a fresh loop in a helper thread, since the caller's loop cannot be
    re-entered and blocking it is what the caller asked for.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="cumulo-blocking") as pool:
        return pool.submit(asyncio.run, coro).result()


async def until(probe: Callable[[], Awaitable[T | None]], *, timeout: float, interval: float) -> T:
    """Await ``probe()`` every ``interval`` seconds until it returns something other than None.

    Returns that value. ``probe`` is always asked at least once, and once more
    after the deadline has passed before giving up, so a slow last answer still
    counts. Raises ``TimeoutError`` after ``timeout`` seconds: the caller turns
    it into the error that says what was waited for and what to do.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing ready within {timeout:g} s")
        await asyncio.sleep(interval)
