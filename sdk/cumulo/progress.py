"""Progress for long computations that cumulo starts (training, shard loading, remote work).

Waiting on futures goes through :func:`wait`: if the work is still running after
``cumulo.progress.delay``, a notebook shows distributed's progress widget and a
terminal shows distributed's text bar; short work shows nothing. Both are dask's
own diagnostics, fed by the scheduler; cumulo only decides when to show them.
Turn them off with ``dask.config.set({"cumulo.progress.enabled": False})`` or
``DASK_CUMULO__PROGRESS__ENABLED=false``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

import distributed
from dask.utils import parse_timedelta
from distributed import Future

from . import config

__all__ = ["enabled", "surface", "wait"]

Surface = Literal["notebook", "terminal", "none"]


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


def show(futures: Sequence[Future]) -> None:
    """Start drawing progress for ``futures`` without blocking (a widget, or a text bar).

    The bar is fed by the scheduler and drawn from the client's event loop, so the
    caller may keep waiting (and printing) on its own thread.
    """
    futures = list(futures)
    where = surface() if enabled() else "none"
    if not futures or where == "none":
        return
    if where == "notebook":
        from IPython.display import display

        display(distributed.progress(futures, notebook=True, multi=True))
        return
    from distributed.diagnostics.progressbar import TextProgressBar

    client = futures[0].client
    bar = TextProgressBar(futures, scheduler=client.scheduler.address, start=False)
    client.loop.add_callback(bar.listen)


def wait(futures: Sequence[Future], *, timeout: float | None = None) -> None:
    """Block until every future is finished (done, erred or cancelled), showing progress if slow.

    Progress appears only if the work is still running after ``cumulo.progress.delay``.
    Errors are not raised here; read them from the futures. ``timeout`` (seconds)
    raises ``TimeoutError`` if the work is not finished by then.
    """
    futures = list(futures)
    if not futures:
        return
    delay = parse_timedelta(config.get("progress.delay", "1s"), default="s") or 0.0
    if not enabled() or surface() == "none" or (timeout is not None and timeout <= delay):
        distributed.wait(futures, timeout=timeout)
        return
    try:
        distributed.wait(futures, timeout=delay)
        return
    except TimeoutError:
        pass
    show(futures)
    distributed.wait(futures, timeout=None if timeout is None else timeout - delay)
