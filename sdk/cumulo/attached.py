"""The clusters attached in this process: the current one, and every one still live.

``cumulo.current()`` returns the current one; the live ones are closed (or let go)
at exit and by `cumulo run`'s teardown, and the cell magics look among them. Kept
apart from the Cluster class so that its start path and the magics reach this
bookkeeping without importing each other.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["current_or_none", "forget", "live", "make_current"]

#: Every cluster running and attached in this process (weak: a cluster nobody holds may go).
live: weakref.WeakSet[Cluster] = weakref.WeakSet()
_current: weakref.ref[Cluster] | None = None


def make_current(cluster: Cluster) -> None:
    """``cluster`` runs: it becomes the current one, and live."""
    global _current
    _current = weakref.ref(cluster)
    live.add(cluster)


def forget(cluster: Cluster) -> None:
    """``cluster`` stopped, failed or was let go: no longer live (it may stay the last current one)."""
    live.discard(cluster)


def current_or_none() -> Cluster | None:
    """The cluster most recently made current, if it still exists."""
    return _current() if _current is not None else None
