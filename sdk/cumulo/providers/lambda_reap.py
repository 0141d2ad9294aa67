"""Find and terminate Lambda instances that cumulo started but nobody is looking after.

An instance is an orphan when its name carries the cumulo prefix and either
- its cluster id is unknown to this registry (a kernel killed between the
  launch request and recording the ids, or a registry file that was removed),
- its cluster row is closed (closed, failed, lost) yet the instance runs, or
- its cluster row is open but expired: the owning process on this host is dead,
  or (for an owner on another host) its heartbeat is older than
  ``cumulo.lambda.orphan-grace``. Callers with a better lease rule (guards.py)
  pass ``expired=``.

``reap_orphans(dry_run=True)`` only lists them with their running cost;
``dry_run=False`` terminates them, confirms it, removes stale cumulo firewall
rules and closes expired rows as ``lost``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from .. import config
from ..registry import ClusterRecord, Registry

if TYPE_CHECKING:
    from .lambda_api import LambdaApi

__all__ = ["Orphan", "find_orphans", "reap_orphans", "reap_orphans_async"]

_PREFIX = "cumulo-"


@dataclass(frozen=True)
class Orphan:
    """An instance cumulo started that no live cluster owns, and what it costs."""

    instance_id: str
    name: str
    cluster_id: str
    reason: str
    status: str
    instance_type: str
    region: str
    price_per_hour: float | None
    running_since: float | None

    @property
    def cost_so_far(self) -> float | None:
        """Estimated $ since the launch was recorded (None when cumulo never recorded it)."""
        if self.price_per_hour is None or self.running_since is None:
            return None
        return self.price_per_hour * max(0.0, time.time() - self.running_since) / 3600.0

    def line(self) -> str:
        """One line for `cumulo reap` output."""
        rate = f"${self.price_per_hour:.2f}/h" if self.price_per_hour is not None else "price unknown"
        spent = f", about ${self.cost_so_far:.2f} so far" if self.cost_so_far is not None else ""
        return (f"{self.instance_id} {self.name} ({self.instance_type}, {self.region}, {self.status}): "
                f"{rate}{spent}; {self.reason}")


def default_expired(record: ClusterRecord, *, grace: float | None = None, now: float | None = None) -> bool:
    """Whether an open cluster row has lost its owner (see the module docstring)."""
    if not record.is_open:
        return True
    alive = record.owner_alive()
    if alive is not None:
        return not alive
    grace = float(parse_timedelta(config.get("lambda.orphan-grace"))) if grace is None else grace
    beat = record.heartbeat or record.updated
    return ((now or time.time()) - beat) > grace


def _cluster_id(name: str) -> str | None:
    if not name.startswith(_PREFIX):
        return None
    rest = name[len(_PREFIX):]
    return rest.split("-", 1)[0] or None


async def find_orphans(
    registry: Registry, api: LambdaApi, *, expired: Callable[[ClusterRecord], bool] | None = None
) -> list[Orphan]:
    """Instances named ``cumulo-<cluster id>-...`` that are not terminated and no live cluster owns."""
    expired = expired or default_expired
    since = {r.resource_id: r.created for r in registry.resources(provider="lambda")}
    out = []
    for inst in await api.instances():
        name = str(inst.get("name") or "")
        cid = _cluster_id(name)
        if cid is None or inst.get("status") == "terminated":
            continue
        try:
            record = registry.get(cid)
        except KeyError:
            reason = "its cluster is unknown to this registry"
        else:
            if not record.is_open:
                reason = f"its cluster {record.name!r} is {record.state}"
            elif expired(record):
                reason = f"its cluster {record.name!r} lost its owner (process gone or heartbeat stale)"
            else:
                continue
        itype: dict[str, Any] = inst.get("instance_type") or {}
        cents = itype.get("price_cents_per_hour")
        region = inst.get("region") or {}
        out.append(Orphan(
            instance_id=inst["id"], name=name, cluster_id=cid, reason=reason, status=str(inst.get("status")),
            instance_type=str(itype.get("name", "?")),
            region=str(region.get("name", "?") if isinstance(region, dict) else region),
            price_per_hour=float(cents) / 100 if cents is not None else None,
            running_since=since.get(inst["id"]) or since.get(name),
        ))
    return out


async def reap_orphans_async(
    registry: Registry | None = None, api: LambdaApi | None = None, *, dry_run: bool = True,
    expired: Callable[[ClusterRecord], bool] | None = None, progress: Callable[[str], None] | None = None,
) -> list[Orphan]:
    """List orphans; unless ``dry_run``, terminate them (confirmed) and close their expired rows as lost."""
    from .lambda_api import LambdaApi
    from .lambda_cloud import PREFIX, teardown

    registry = registry or Registry()
    own_api = api is None
    api = api or LambdaApi()
    try:
        orphans = await find_orphans(registry, api, expired=expired)
        if dry_run:
            return orphans
        for cid in sorted({o.cluster_id for o in orphans}):
            await teardown(api, registry, cid, progress=progress)
            try:
                record = registry.get(cid)
            except KeyError:
                continue
            if record.is_open:
                registry.close(cid, state="lost", note="owner gone; instances reaped by cumulo reap")
        # Firewall rules of clusters that are no longer open (e.g. a teardown cut short).
        rules = await api.firewall_rules()
        keep = []
        for rule in rules:
            cid = _cluster_id(str(rule.get("description") or ""))
            stale = False
            if cid is not None and str(rule.get("description")).startswith(PREFIX):
                try:
                    stale = not registry.get(cid).is_open
                except KeyError:
                    stale = True
            if not stale:
                keep.append(rule)
        if len(keep) != len(rules):
            await api.set_firewall_rules(keep)
        return orphans
    finally:
        if own_api:
            await api.client.aclose()


def reap_orphans(
    registry: Registry | None = None, *, dry_run: bool = True,
    expired: Callable[[ClusterRecord], bool] | None = None, progress: Callable[[str], None] | None = None,
) -> list[Orphan]:
    """Blocking form of :func:`reap_orphans_async` for the CLI (runs its own event loop)."""
    coro = reap_orphans_async(registry, dry_run=dry_run, expired=expired, progress=progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside a running loop (a notebook): run on a fresh loop in a helper thread.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
