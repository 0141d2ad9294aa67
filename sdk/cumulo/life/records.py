"""The registry's rows as cumulo reads them: a cluster, a resource, and a row that cannot be read.

Kept apart from the registry's file access (registry.py) and its SQL schema
(schema.py): most of cumulo only reads these records.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import RegistryError
from .owner import Owner, alive, this_process
from .states import FINAL, OPEN

__all__ = ["CLOSED_STATES", "OPEN_SQL", "OPEN_STATES", "ClusterRecord", "CorruptRow", "ResourceRecord",
           "cluster_of_row", "readable", "resource_of_row"]

logger = logging.getLogger("cumulo.life.registry")

#: States of a cluster that may still be running (and billing); see cumulo.lifecycle.
OPEN_STATES = tuple(sorted(s.value for s in OPEN))
#: Final states: closed (confirmed stopped), failed (never came up, cleaned up), lost (gone without us).
CLOSED_STATES = tuple(sorted(s.value for s in FINAL))
#: The open states as an SQL list, for ``state IN ...``.
OPEN_SQL = "(" + ", ".join(f"'{s}'" for s in OPEN_STATES) + ")"


@dataclass
class ClusterRecord:
    """One row of the clusters table."""

    id: str
    name: str
    provider: str
    spec: dict[str, Any]
    state: str
    created: float
    updated: float
    address: str | None = None
    dashboard: str | None = None
    owner_pid: int | None = None
    owner_host: str | None = None
    #: The owner's start time (clock ticks since boot) and boot id: with the PID, who the owner is.
    owner_started: float | None = None
    owner_boot: str | None = None
    closed: float | None = None
    heartbeat: float | None = None
    lease_seconds: float | None = None
    workers: int | None = None
    threads: int | None = None
    memory: int | None = None
    gpus: int | None = None
    gpu_model: str | None = None
    backend: str | None = None
    budget: float | None = None
    idle_timeout: float | None = None
    rate_per_hour: float | None = None
    cost: float | None = None
    cost_kind: str | None = None
    note: str | None = None
    #: The usage kept when the cluster closed (a JSON object; see cumulo.cost.metering), None while open.
    usage: str | None = None
    #: Where the rate changed while the cluster ran (an instance stopped billing): a JSON list of
    #: [time, rate per hour from then on], the first entry the rate from creation; None: one rate throughout.
    rate_changes: str | None = None

    @property
    def is_open(self) -> bool:
        """Whether the cluster may still be running."""
        return self.state in OPEN_STATES

    @property
    def may_bill(self) -> bool:
        """Whether a stop of this cluster failed, so its resources may still bill."""
        return self.state == "stop-failed"

    @property
    def age(self) -> float:
        """Seconds since creation (until closing, for closed clusters)."""
        return (self.closed or time.time()) - self.created

    @property
    def owner(self) -> Owner | None:
        """The process that owns the row, None when nobody does (disconnected, or never recorded)."""
        if not self.owner_pid or not self.owner_host:
            return None
        return Owner(pid=self.owner_pid, host=self.owner_host, started=self.owner_started, boot=self.owner_boot)

    def owned_here(self) -> bool:
        """Whether this process owns the cluster (started it, and has not disconnected)."""
        return self.owner is not None and self.owner == this_process()

    def owner_alive(self) -> bool | None:
        """Whether the process that owns the cluster still runs: None when that is unknowable from here
        (another host, no owner recorded, or no start time to tell a reused PID from the owner)."""
        owner = self.owner
        return None if owner is None else alive(owner)


@dataclass
class ResourceRecord:
    """A billable thing at a provider that belongs to a cluster."""

    provider: str
    resource_id: str
    cluster_id: str
    kind: str
    state: str
    created: float
    updated: float
    meta: dict[str, Any] = field(default_factory=dict)


class CorruptRow(RegistryError):
    """A registry row cumulo cannot read (its spec is not a JSON object): named, and skipped in lists."""

    def __init__(self, row: dict[str, Any], registry: Path | str, why: str) -> None:
        self.cluster_id = str(row.get("id"))
        super().__init__(
            f"registry row {self.cluster_id} ({row.get('name')!r}, {row.get('provider')}, {row.get('state')}) is "
            f"unreadable: {why}. cumulo skips it; if that cluster may still run, stop it in its provider's "
            f"console, then remove the row: sqlite3 {registry} \"DELETE FROM clusters WHERE id='{self.cluster_id}'\"")


#: Ids of unreadable rows already reported by this process (one line each, not one per listing).
_reported: set[str] = set()


def cluster_of_row(row: sqlite3.Row, registry: Path | str = "the registry") -> ClusterRecord:
    data = dict(row)
    try:
        spec = json.loads(data["spec"] or "{}")
        if not isinstance(spec, dict):
            raise ValueError("its spec is not a JSON object")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise CorruptRow(data, registry, str(exc)) from None
    data["spec"] = spec
    return ClusterRecord(**data)


def readable(rows: list[sqlite3.Row], registry: Path | str) -> list[ClusterRecord]:
    """The rows as records, leaving out (and reporting once) those that cannot be read."""
    out = []
    for row in rows:
        try:
            out.append(cluster_of_row(row, registry))
        except CorruptRow as exc:
            if exc.cluster_id not in _reported:
                _reported.add(exc.cluster_id)
                logger.warning("cumulo: %s", exc)
    return out


def resource_of_row(row: sqlite3.Row) -> ResourceRecord:
    return ResourceRecord(provider=row["provider"], resource_id=row["resource_id"], cluster_id=row["cluster_id"],
                          kind=row["kind"], state=row["state"], created=row["created"], updated=row["updated"],
                          meta=json.loads(row["meta"]))
