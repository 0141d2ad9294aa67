"""The launch plan: what a launch will do, resolved against the cloud before anything bills.

A cloud provider's preflight chooses the shape and region (its own business)
and builds a :class:`Plan`; the checks every cloud shares live here: the
offer line, the price above ``cumulo.cloud.confirm-above-per-hour`` that needs
``options={"confirm": True}``, and the head's last-resort idle timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
from dask.utils import parse_timedelta

from ... import config
from ...exceptions import SpecError
from ...spec import ClusterSpec
from .settings import CloudSettings

__all__ = ["HEARTBEATS_PER_LEASE", "Plan", "check_price", "last_resort_idle", "last_resort_lease"]

#: The head's client lease is at least this many client heartbeats.
HEARTBEATS_PER_LEASE = 3


@dataclass(frozen=True)
class Plan:
    """What a launch will do, as resolved against the cloud just before it."""

    instance_type: str
    region: str
    #: $/h of one instance, and of all of them.
    price_per_hour: float
    instances: int
    rate_per_hour: float
    #: The user's own key at the cloud; None: cumulo makes one for the cluster.
    ssh_key: str | None
    #: The only network the scheduler's port is opened to.
    source: str
    #: Seconds without work after which the head's scheduler stops by itself (the last resort when no
    #: cumulo process is left to enforce the idle timeout); None: never.
    idle_timeout: float | None = None
    #: Seconds without a client heard from after which the head's scheduler stops (the kernel's lease; None:
    #: the cluster is meant to outlive its kernel, ``keep_alive``).
    client_lease: float | None = None
    #: The cloud's own description of the shape (Lambda: its InstanceType), for its adapter.
    shape: Any = None


def last_resort_idle(spec: ClusterSpec, settings: CloudSettings) -> float | None:
    """The head scheduler's own idle timeout: the cluster's, plus the time a launch may wait for its workers.

    dask counts a scheduler idle from its start, and workers may still be booting and installing
    then; the kernel's guards and the reapers enforce the real idle timeout, this only ends a
    scheduler that nobody is left to stop.
    """
    idle = spec.idle_timeout or config.get("guards.idle-timeout")
    return float(parse_timedelta(idle)) + settings.seconds("workers-timeout") if idle else None


def last_resort_lease(spec: ClusterSpec) -> float | None:
    """The head scheduler's client lease: the kernel lease (``cumulo.guards.lease-grace``), None with keep-alive.

    The kernel's own lease closes the cluster from the registry (reapers); this ends a cluster whose kernel
    went away when no reaper runs. Never shorter than three of the client's heartbeats
    (``distributed.client.heartbeat``): the switch hears a live kernel only when it heartbeats, and a
    lease shorter than that would stop the cluster of a kernel that is still there.
    """
    if config.get("guards.keep-alive") or spec.options.get("keep_alive"):
        return None
    grace = config.get("guards.lease-grace")
    if not grace:
        return None
    heartbeat = float(parse_timedelta(dask.config.get("distributed.client.heartbeat", "5s")))
    return max(float(parse_timedelta(grace)), HEARTBEATS_PER_LEASE * heartbeat)


def check_price(rate: float, spec: ClusterSpec, settings: CloudSettings) -> None:
    """SpecError when ``rate`` ($/h) is above the confirm threshold and the spec does not confirm it."""
    limit = settings.get("confirm-above-per-hour")
    if limit is not None and rate > float(limit) and not spec.options.get("confirm"):
        raise SpecError(
            f"this cluster would cost about ${rate:.2f}/h, above {settings.key('confirm-above-per-hour')} "
            f"(${float(limit):.2f}/h). To go ahead pass options={{'confirm': True}} to connect(), "
            "or ask for fewer or cheaper instances.")
