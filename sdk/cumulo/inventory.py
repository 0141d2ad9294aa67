"""The user's clusters as a whole: list them, notice dead owners, stop them from anywhere.

Used by ``cumulo.clusters()``, the ``cumulo ls``/``down`` commands and the
Jupyter server extension. Works only from the registry plus each provider's
``stop``, so it runs in any process, not just the one that started a cluster.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dask.utils import parse_timedelta

from .exceptions import ClusterNotFound
from .providers import get_provider
from .registry import ClusterRecord, Registry

__all__ = ["clusters", "reconcile", "stop", "stop_record"]

#: Closed clusters younger than this are listed by default ("recently closed").
RECENT = "24h"


def reconcile(registry: Registry) -> list[ClusterRecord]:
    """Mark open local clusters whose owner process on this host is gone as lost; return those rows.

    A local cluster's workers are children of the process that started it and
    die with it, so such a row describes nothing that still runs or bills.
    """
    lost = []
    for record in registry.list(include_closed=False):
        if record.provider == "local" and record.owner_alive() is False:
            registry.close(record.id, state="lost", note=f"owner process {record.owner_pid} exited")
            lost.append(record)
    return lost


def clusters(*, include_closed: bool = True, since: str | float | None = RECENT, registry: Registry | None = None) -> Any:
    """A table of your clusters: name, provider, address, workers, GPUs, backend, state, age.

    Open clusters always; closed ones created within ``since`` (default 24h;
    None for all history) when ``include_closed``.
    """
    from .display import clusters_frame

    registry = registry or Registry()
    reconcile(registry)
    cutoff = None if since is None else time.time() - parse_timedelta(since)
    return clusters_frame(registry.list(include_closed=include_closed, since=cutoff))


async def stop_record(record: ClusterRecord, registry: Registry) -> None:
    """Stop one cluster through its provider, then close its row (only after the provider confirms)."""
    provider = get_provider(record.provider)
    registry.update(record.id, state="closing")
    try:
        await provider.stop(record, registry)  # a no-op for schedulers started outside cumulo
    except BaseException as exc:
        registry.update(record.id, state="running")
        registry.event(record.id, "stop-failed", f"{type(exc).__name__}: {exc}")
        raise
    if provider.owns_scheduler:
        note = "stopped by `cumulo down`"
    else:
        note = "forgotten; the scheduler was started outside cumulo"
    registry.close(record.id, state="closed", note=note)


def stop(name: str | None = None, *, all: bool = False, registry: Registry | None = None) -> list[ClusterRecord]:
    """Stop the open cluster called ``name`` (or every open cluster with ``all=True``); return what was stopped."""
    registry = registry or Registry()
    reconcile(registry)
    if all:
        targets = registry.list(include_closed=False)
    else:
        if name is None:
            raise ClusterNotFound("name a cluster to stop, or use all=True (`cumulo down --all`)")
        record = registry.find_open(name)
        if record is None:
            open_names = [r.name for r in registry.list(include_closed=False)]
            raise ClusterNotFound(
                f"no open cluster named {name!r}; open clusters: {', '.join(open_names) or 'none'} (see `cumulo ls`)"
            )
        targets = [record]
    for record in targets:
        asyncio.run(stop_record(record, registry))
    return targets
