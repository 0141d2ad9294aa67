"""Who else wants to hear what a cluster used: listeners told at attach, after each cell, at close, and
around a piece of named work (a training call).

The cost code calls :func:`attached`, :func:`cell` and :func:`closing` at one place each
(cumulo.life.watchdog and cumulo.cost.cellcost); the training launchers wrap their call in
:func:`work`. A tracker such as cumulo.mlops (MLflow autolog) :func:`subscribe`\\ s an object
with any of the methods below. With no listener every call returns at once (one list
test), so this costs nothing to those who do not use it.

A listener never breaks its caller: whatever it raises is logged (at debug) and dropped,
so that a notebook cell, a close or a training run goes on as if it were not there.

    attached(cluster)                          on the cluster's event loop, once it runs
    cell(cluster, tag, execution_count, row, spend)
                                               in the kernel, after a cell that used the cluster
    closing(cluster, kept)                     on the cluster's loop, with the usage kept at close
    work_started(name, cluster) -> token       in the caller's thread, before the work
    work_ended(token, ok)                      in the caller's thread, after it (``ok``: it returned)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["active", "attached", "cell", "closing", "reported", "subscribe", "unsubscribe", "work"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("cumulo")

_listeners: list[Any] = []


def subscribe(listener: Any) -> None:
    """Tell ``listener`` about usage from now on (once, however often it subscribes)."""
    if not any(x is listener for x in _listeners):
        _listeners.append(listener)


def unsubscribe(listener: Any) -> None:
    """Stop telling ``listener``."""
    _listeners[:] = [x for x in _listeners if x is not listener]


def active() -> bool:
    """Whether anyone listens."""
    return bool(_listeners)


def _call(listener: Any, method: str, *args: Any) -> Any:
    fn = getattr(listener, method, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:  # a tracker must never break a cell, a close or a training run
        logger.debug("cumulo: usage listener %r failed in %s", listener, method, exc_info=True)
        return None


def attached(cluster: Any) -> None:
    """``cluster`` runs and its ledger is installed (called on its event loop)."""
    for listener in list(_listeners):
        _call(listener, "attached", cluster)


def cell(cluster: Any, tag: str, execution_count: int | None, row: dict[str, Any], spend: Any) -> None:
    """A notebook cell used ``cluster``: its ledger ``row`` and what it cost (a metering.Spend)."""
    for listener in list(_listeners):
        _call(listener, "cell", cluster, tag, execution_count, row, spend)


def closing(cluster: Any, kept: dict[str, Any]) -> None:
    """``cluster`` is closing; ``kept`` is its final usage (metering.final_usage: summary and rows)."""
    for listener in list(_listeners):
        _call(listener, "closing", cluster, kept)


@contextlib.contextmanager
def work(name: str, cluster: Any) -> Iterator[None]:
    """Around a named piece of work on ``cluster`` (``"train.torch"``): listeners hear its start and end."""
    if not _listeners:
        yield
        return
    tokens = [(listener, _call(listener, "work_started", name, cluster)) for listener in list(_listeners)]
    ok = False
    try:
        yield
        ok = True
    finally:
        for listener, token in tokens:
            _call(listener, "work_ended", token, ok)


def reported(name: str) -> Callable[[F], F]:
    """Decorate a launcher whose ``cluster`` argument names the cluster: each call is :func:`work` ``name``."""
    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if not _listeners:
                return fn(*args, **kwargs)
            try:
                cluster = signature.bind_partial(*args, **kwargs).arguments.get("cluster")
            except TypeError:  # the call itself is wrong: let the launcher say so
                return fn(*args, **kwargs)
            with work(name, cluster):
                return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap
