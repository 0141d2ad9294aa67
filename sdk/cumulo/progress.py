"""Progress for long computations that cumulo starts (training, shard loading, remote work).

Waiting on futures goes through :func:`wait`: if the work is still running after
``cumulo.progress.delay``, a notebook shows distributed's progress widget and a
terminal shows distributed's text bar; short work shows nothing. Both are dask's
own diagnostics, fed by the scheduler; cumulo only decides when to show them.
Turn them off with ``dask.config.set({"cumulo.progress.enabled": False})`` or
``DASK_CUMULO__PROGRESS__ENABLED=false``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Self

import distributed
from dask.utils import parse_timedelta
from distributed import Future

from . import config

__all__ = ["Shown", "enabled", "show", "surface", "wait"]

Surface = Literal["notebook", "terminal", "none"]
_CHECK_EVERY = 0.5  # seconds between calls of wait's check


def enabled() -> bool:
    """Whether cumulo shows progress bars (``cumulo.progress.enabled``)."""
    return bool(config.get("progress.enabled", True))


def surface() -> Surface:
    """Where progress can be drawn: a Jupyter kernel, an interactive terminal, or nowhere."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        return "notebook"
    stream = sys.stdout
    if stream is not None and hasattr(stream, "isatty") and stream.isatty():
        return "terminal"
    return "none"


class Shown:
    """A progress bar drawn for some futures, which lives only as long as cumulo waits on them.

    The bar is dask's own (fed by the scheduler), listening on the client's event loop so
    that it draws while the caller blocks, in a terminal and in a kernel alike. :meth:`close`
    gives it a moment to draw its last state, then stops it: a bar left listening would keep
    printing into whatever runs next, and one whose futures were released before it
    registered would wait for them forever.
    """

    def __init__(self, bar: Any = None, task: concurrent.futures.Future[Any] | None = None) -> None:
        self._bar = bar
        self._task = task

    def close(self, grace: float = 2.0) -> None:
        """Let the bar finish drawing (up to ``grace`` seconds), then stop it."""
        if self._task is None:
            return
        try:
            self._task.result(timeout=grace)
        except Exception:  # noqa: BLE001 - unfinished, cancelled or failed: it is stopped below either way
            self._task.cancel()
        comm = getattr(self._bar, "comm", None)
        if comm is not None and not comm.closed():
            comm.abort()
        self._task = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def show(futures: Sequence[Future]) -> Shown:
    """Start drawing progress for ``futures`` without blocking (a widget, or a text bar).

    Close what it returns once the futures are done (or use it as a context manager),
    while the futures are still held.
    """
    futures = list(futures)
    where = surface() if enabled() else "none"
    if not futures or where == "none":
        return Shown()
    client = futures[0].client
    if where == "notebook":
        from distributed.diagnostics.progressbar import MultiProgressWidget
        from IPython.display import display

        bar: Any = MultiProgressWidget(futures, scheduler=client.scheduler.address, complete=True)
        display(bar.widget)
    else:
        from distributed.diagnostics.progressbar import TextProgressBar

        bar = TextProgressBar(futures, scheduler=client.scheduler.address, start=False)
    task = asyncio.run_coroutine_threadsafe(bar.listen(), client.loop.asyncio_loop)
    return Shown(bar, task)


def wait(
    futures: Sequence[Future], *, timeout: float | None = None, check: Callable[[], None] | None = None
) -> None:
    """Block until every future is finished (done, erred or cancelled), showing progress if slow.

    Progress appears only if the work is still running after ``cumulo.progress.delay``.
    Errors are not raised here; read them from the futures. ``timeout`` (seconds)
    raises ``TimeoutError`` if the work is not finished by then. ``check`` is called
    about twice a second while waiting; what it raises ends the wait (for work that
    can never finish, such as a task pinned to a worker that left).
    """
    futures = list(futures)
    if not futures:
        return
    delay = parse_timedelta(config.get("progress.delay", "1s"), default="s") or 0.0
    deadline = None if timeout is None else time.monotonic() + timeout
    if not enabled() or surface() == "none" or (timeout is not None and timeout <= delay):
        _wait_checked(futures, deadline, check)
        return
    try:
        _wait_checked(futures, time.monotonic() + delay, check)
        return
    except TimeoutError:
        if deadline is not None and time.monotonic() >= deadline:
            raise
    with show(futures):
        _wait_checked(futures, deadline, check)


def _wait_checked(futures: list[Future], deadline: float | None, check: Callable[[], None] | None) -> None:
    """``distributed.wait`` until ``deadline`` (monotonic seconds), calling ``check`` between short waits."""
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"{sum(not f.done() for f in futures)} of {len(futures)} tasks still running")
        step = left if check is None else (_CHECK_EVERY if left is None else min(left, _CHECK_EVERY))
        try:
            distributed.wait(futures, timeout=step)
            return
        except TimeoutError:
            if check is not None:
                check()
