"""Keep what is to be logged while the tracking server is away, and log it once it answers again.

A notebook cell must never wait for, or fail because of, an experiment tracker. So
cumulo's MLflow values go into an :class:`Outbox`: a bounded queue emptied by one
daemon thread (``cumulo-mlflow-outbox``) that sends them in order. When a send fails
because the server cannot be reached, the values stay (the oldest are dropped beyond
``limit``, and that is said once), a warning says so once per outage, and the thread
tries again every ``retry_interval`` seconds (and at once when more values arrive).
A value the server refuses while it is reachable (a bad parameter) is dropped with a
warning rather than tried for ever.

Not a task on a cluster's event loop: the values outlive the cluster (a run's totals are
logged as it closes, and an outage may last past it), so the outbox has its own thread,
stopped by :meth:`Outbox.close` (autolog(disable=True), and at exit after a bounded flush).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Item", "Outbox", "TrackerWarning", "Unreachable", "describe"]

logger = logging.getLogger("cumulo")


class TrackerWarning(UserWarning):
    """The experiment tracker could not be reached; cumulo keeps the values and tries again."""


class Unreachable(Exception):
    """Raised by a sender when the tracking server cannot be reached (keep the item, try later)."""


@dataclass
class Item:
    """One thing to log: ``what`` says it in a warning; ``send()`` logs it (raising Unreachable to keep it)."""

    what: str
    send: Callable[[], None]
    #: called when the item is dropped unsent (it may hold files)
    discard: Callable[[], None] | None = None
    #: takes the next item into this one when both can go in one request (True: taken)
    merge: Callable[[Item], bool] | None = None
    #: what ``merge`` looks at in the other item
    payload: Any = None
    attempts: int = 0
    created: float = field(default_factory=time.time)

    def drop(self) -> None:
        if self.discard is not None:
            try:
                self.discard()
            except Exception:
                pass


class Outbox:
    """A bounded queue of :class:`Item`\\ s and the thread that sends them."""

    def __init__(self, *, limit: int = 10000, retry_interval: float = 10.0, max_attempts: int = 5,
                 linger: float = 0.5, name: str = "cumulo-mlflow-outbox") -> None:
        self.limit = max(1, int(limit))
        self.retry_interval = float(retry_interval)
        #: a new item waits this long for others to go with it in one request (not when flushed)
        self.linger = float(linger)
        self._flushing = 0
        self.max_attempts = max_attempts
        self.sent = 0
        self.dropped = 0
        #: the reason the last send could not reach the server (None while it answers)
        self.down: str | None = None
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._warned_full = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        """Queue ``item`` to be sent soon; never blocks on the network."""
        with self._cond:
            if self._closing:
                return
            self._items.append(item)
            while len(self._items) > self.limit:
                self._items.popleft().drop()
                self.dropped += 1
                if not self._warned_full:
                    self._warned_full = True
                    _warn(f"cumulo: the MLflow tracking server has been unreachable for a while; more than "
                          f"{self.limit} values are waiting, so the oldest are dropped "
                          "(raise cumulo.mlflow.queue-limit to keep more)")
            self._cond.notify()

    @property
    def pending(self) -> int:
        """Items not sent yet."""
        with self._cond:
            return len(self._items) + (1 if self._busy else 0)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` seconds until everything queued is sent; True if it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            try:
                self._cond.notify_all()
                while self._items or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.05))
                    self._cond.notify_all()
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Send what can be sent within ``timeout`` seconds, then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            left = len(self._items)
            for item in self._items:
                item.drop()
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, self.retry_interval + 1.0))
        if left:
            logger.warning("cumulo: %d MLflow values were not logged (the tracking server did not answer)", left)

    def _run(self) -> None:
        wait: float | None = None
        while True:
            with self._cond:
                if not self._items and not self._closing:
                    self._cond.wait(wait)
                elif wait is not None and not self._closing:
                    self._cond.wait(wait)  # after a failure: retry_interval, unless flushed or closed
                if self._closing:
                    return
                if not self._items:
                    wait = None
                    continue
                young = self.linger - (time.time() - self._items[0].created)
                if wait is None and young > 0 and not self._flushing:
                    self._cond.wait(young)  # let the next cells' values come along in the same request
                    continue
                item = self._items[0]
                while len(self._items) > 1 and item.merge is not None and item.merge(self._items[1]):
                    del self._items[1]
                self._busy = True
            wait = self._send(item)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _send(self, item: Item) -> float | None:
        """Send one item; return how long to wait before the next attempt (None: go on at once)."""
        try:
            item.send()
        except Unreachable as exc:
            if self.down is None:
                self.down = str(exc)
                _warn(f"cumulo: could not reach the MLflow tracking server ({exc}); your cell is fine and "
                      f"cumulo keeps its figures (up to {self.limit}), logging them once the server answers "
                      f"(tried every {self.retry_interval:g}s)")
            return self.retry_interval
        except Exception as exc:  # reachable, but refused: this value will never go in
            item.attempts += 1
            if item.attempts < self.max_attempts:
                return self.retry_interval
            self._pop(item)
            item.drop()
            self.dropped += 1
            logger.warning("cumulo: MLflow refused %s, dropped after %d tries: %s", item.what, item.attempts,
                           describe(exc))
            return None
        if self.down is not None:
            logger.warning("cumulo: the MLflow tracking server answers again; logging what was kept")
            self.down = None
        self._pop(item)
        self.sent += 1
        return None

    def _pop(self, item: Item) -> None:
        with self._cond:
            if self._items and self._items[0] is item:
                self._items.popleft()


def _warn(message: str) -> None:
    """Once per outage: a warning the notebook shows (from this thread) and a log line."""
    logger.warning(message)
    warnings.warn_explicit(message, TrackerWarning, filename="cumulo mlflow", lineno=0, module="cumulo.mlops")


_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")


def describe(exc: BaseException) -> str:
    """A short reason for a failed send, without secrets: the user and password part of a URL (before its ``@``)
    become ``***``; MLflow's token travels in a header and never appears in its messages."""
    text = _USERINFO.sub(r"\1***@", f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 300 else text[:297] + "..."
