"""The user's clusters as a whole: list them, notice dead owners, stop them from anywhere.

Used by ``cumulo.clusters()``, the ``cumulo ls``/``down``/``usage`` commands and
the Jupyter server extension. Works only from the registry plus each provider's
``stop``, so it runs in any process, not just the one that started a cluster.
A cluster is named by its name or by the id ``cumulo ls`` shows (:func:`find`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from dask.utils import parse_timedelta

from ..aio import blocking
from ..cost.metering import fetch_ledger_async, final_usage
from ..display import clusters_frame
from ..exceptions import ClusterNotFound, CumuloError
from ..providers import get_provider, provider_class
from .lifecycle import Lifecycle
from .registry import ClusterRecord, Registry

__all__ = ["StopReport", "clusters", "find", "reconcile", "stop", "stop_record", "who"]

logger = logging.getLogger("cumulo")

#: Closed clusters younger than this are listed by default ("recently closed").
RECENT = "24h"


def who(what: str) -> str:
    """``what`` and the process doing it, for a row's note ("stopped by `cumulo down` (pid 12 on host)")."""
    return f"{what} (pid {os.getpid()} on {socket.gethostname()})"


def find(key: str, registry: Registry, *, open_only: bool = False) -> ClusterRecord | None:
    """The cluster ``key`` names: by name (the open one, else the latest), else by the id ``cumulo ls``
    shows (or a unique start of it, at least 4 characters). None when nothing matches.

    ``open_only``: only an open cluster matches. A name wins over an id: clusters are
    named by people, ids only disambiguate.
    """
    record = registry.find_open(key) or (None if open_only else registry.latest(key))
    if record is not None:
        return record
    try:
        record = registry.get(key)
    except KeyError:
        record = None
        if len(key) >= 4:
            matches = [r for r in registry.list() if r.id.startswith(key)]
            record = matches[0] if len(matches) == 1 else None
    if record is not None and open_only and not record.is_open:
        return None
    return record


def reconcile(registry: Registry) -> list[ClusterRecord]:
    """Mark open clusters that lived in an owner process on this host that is gone as lost; return them.

    Such a cluster's workers are children of the process that started it and
    die with it, so its row describes nothing that still runs or bills.
    """
    lifecycle = Lifecycle(registry)
    lost = []
    for record in registry.list(include_closed=False):
        try:
            cls = provider_class(record.provider)
        except CumuloError:
            continue  # a provider this process does not know (registered elsewhere)
        if cls.lives_in_owner_process and record.owner_alive() is False:
            if lifecycle.lost(record, cls(), f"owner process {record.owner_pid} exited"):
                lost.append(record)
    return lost


def clusters(*, include_closed: bool = True, since: str | float | None = RECENT, registry: Registry | None = None) -> Any:
    """A table of your clusters: name, provider, address, workers, GPUs, backend, state, age.

    Open clusters always (a "stop failed: may still bill" one among them); closed
    ones created within ``since`` (default 24h; None for all history) when ``include_closed``.
    """
    registry = registry or Registry()
    reconcile(registry)
    cutoff = None if since is None else time.time() - parse_timedelta(since)
    return clusters_frame(registry.list(include_closed=include_closed, since=cutoff))


async def stop_record(record: ClusterRecord, registry: Registry, *, why: str | None = None) -> None:
    """Stop one cluster through its provider; the row closes only once the provider confirms.

    The scheduler's ledger is read first (a short RPC) and, once the row is closed,
    kept in it as the cluster's final usage, as its own kernel does when it closes it.
    """
    provider = get_provider(record.provider)
    kept = await _final_usage(record, provider)
    await Lifecycle(registry).stop(record, provider, why=why or who("stopped by `cumulo down`"))
    keep_usage(registry, record.id, kept)


def keep_usage(registry: Registry, cluster_id: str, usage: dict[str, Any] | None) -> None:
    """Keep ``usage`` (metering.final_usage) in a closed row, unless its owner already kept its own reading.

    A record, never a reason for a stop to fail: errors are logged at debug level.
    """
    if usage is None:
        return
    try:
        if not registry.get(cluster_id).usage:  # the owner's own reading, if it made one, wins
            registry.update(cluster_id, usage=json.dumps(usage, allow_nan=False))
    except Exception as exc:
        logger.debug("cumulo: could not keep the usage of cluster %s: %s", cluster_id, exc)


async def _final_usage(record: ClusterRecord, provider: Any) -> dict[str, Any] | None:
    """The usage to keep for a cluster about to be stopped from here: None when its ledger does not answer."""
    if not record.address:
        return None
    try:
        ledger = await fetch_ledger_async(record.address, provider.security(record), timeout=3.0)
    except Exception:
        return None
    return None if ledger is None else final_usage(record, ledger)


@dataclass
class StopReport:
    """What ``stop`` did: the clusters it stopped and those it could not, with why."""

    stopped: list[ClusterRecord] = field(default_factory=list)
    failed: list[tuple[ClusterRecord, str]] = field(default_factory=list)


def stop(name: str | None = None, *, all: bool = False, registry: Registry | None = None) -> StopReport:
    """Stop the open cluster called ``name`` (or with that id), or every open cluster with ``all=True``.

    With ``all`` every cluster is tried, and each failure is reported rather than
    ending the sweep; a single named cluster that fails to stop raises.
    """
    registry = registry or Registry()
    reconcile(registry)
    if all:
        targets = registry.list(include_closed=False)
    else:
        if name is None:
            raise ClusterNotFound("name a cluster to stop, or use all=True (`cumulo down --all`)")
        record = find(name, registry, open_only=True)
        if record is None:
            open_names = [r.name for r in registry.list(include_closed=False)]
            raise ClusterNotFound(
                f"no open cluster named {name!r}; open clusters: {', '.join(open_names) or 'none'} (see `cumulo ls`)"
            )
        targets = [record]
    report = StopReport()
    for record in targets:
        try:
            blocking(stop_record(record, registry))
        except Exception as exc:
            if not all:
                raise
            report.failed.append((record, f"{type(exc).__name__}: {exc}"))
        else:
            report.stopped.append(record)
    return report
