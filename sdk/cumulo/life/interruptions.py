"""Instances a cloud takes back (spot interruptions): what the cluster's own watchers report, applied.

On a cloud instance that can be taken back, the first-boot script runs a watcher
(:mod:`cumulo.providers.cloud.notice_watch`) that polls the cloud's notice (AWS:
the metadata service's ``spot/instance-action``). On notice it retires its
worker through dask's ``retire_workers`` (its data moves to the other workers
before the deadline) and logs a :data:`TOPIC` event on the scheduler. The
kernel's watchdog reads those events on each pass and hands them to
:func:`apply`, which records the instance as interrupted and takes its price off
the cluster's rate from the notice's deadline on, once, whoever sees it first
(the scheduler keeps its events, so a kernel that re-attaches still sees them).
The kernel that launched the cluster then launches a replacement, where the
cloud can add instances (``replace``: the cluster's ``replace_lost``,
providers/cloud/deployment.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .registry import Registry

__all__ = ["TOPIC", "apply", "apply_taken_back"]

#: The scheduler event topic the instances' watchers log to.
TOPIC = "cumulo-interruption"

logger = logging.getLogger("cumulo")


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%H:%M:%S UTC")


def _not_replaced() -> str:
    return "Not replaced."


def _recorded(registry: Registry, provider: str, cluster_id: str, instance: str) -> str:
    """The recorded id of the instance a watcher reported: its id (an EC2 instance knows it), or, where a
    machine knows only its name (an Azure VM: its id is ARM's resource path), the id of the cluster's
    instance recorded under that name."""
    found = [r for r in registry.resources(cluster_id=cluster_id, provider=provider) if r.kind == "instance"]
    if any(r.resource_id == instance for r in found):
        return instance
    named = [r.resource_id for r in found if str(r.meta.get("name") or "").lower() == instance.lower()]
    return named[0] if len(named) == 1 else instance


def apply(registry: Registry, provider: str, cluster_id: str, events: Iterable[tuple[float, Any]], *,
          title: str, say: Callable[[str], None] | None = None,
          replace: Callable[[], str] = _not_replaced) -> list[str]:
    """Apply the cluster's interruption events; return a line for each instance newly seen taken back.

    ``replace`` is asked once each instance has stopped billing: it may start a replacement (the cluster's
    ``replace_lost``) and gives the sentence that ends the line.
    """
    lines = []
    for _, msg in events:
        if not isinstance(msg, dict) or not isinstance(msg.get("instance"), str):
            continue
        at = float(msg.get("at") or msg.get("notice_at") or 0.0)
        if at <= 0:
            continue
        was = registry.stop_billing(provider, _recorded(registry, provider, cluster_id, msg["instance"]), at=at,
                                    state="interrupted")
        if was is None:  # unknown here, or already applied
            continue
        market = was.meta.get("market") or "spot"
        price = was.meta.get("price_per_hour")
        workers = ", ".join(msg.get("workers") or []) or msg.get("name") or "?"
        line = (f"worker {workers} interrupted ({market}) at {_when(float(msg.get('notice_at') or at))}: "
                f"{title} takes instance {msg['instance']} back at {_when(at)}. Its data moved to the other "
                "workers (retire_workers)"
                + (f"; its ${float(price):.4g}/h stops billing then" if isinstance(price, (int, float)) else "")
                + _then(replace()))
        registry.event(cluster_id, "interrupted", line)
        logger.warning("cumulo: %s", line)
        if say is not None:
            say(line)
        else:  # a notebook shows stderr under the running cell: a lost worker is never silent
            print(f"cumulo: {line}", file=sys.stderr, flush=True)
        lines.append(line)
    return lines


def _then(sentence: str) -> str:
    return f". {sentence}" if sentence else "."


def apply_taken_back(registry: Registry, provider: str, cluster_id: str, taken: Iterable[tuple[str, str]], *,
                     title: str, at: float, say: Callable[[str], None] | None = None,
                     replace: Callable[[], str] = _not_replaced) -> list[str]:
    """Apply instances the cloud took back without notice (``(id, status)``, e.g. Lambda's ``preempted``), seen
    at ``at``: each stops billing then, once; return a line for each newly seen (``replace``: as for apply)."""
    lines = []
    for instance, status in taken:
        was = registry.stop_billing(provider, instance, at=at, state=status)
        if was is None:
            continue
        price = was.meta.get("price_per_hour")
        role = str(was.meta.get("name") or instance).rsplit("-", 1)[-1]
        line = (f"instance {instance} ({was.meta.get('name') or 'a worker'}) was {status} by {title}, seen at "
                f"{_when(at)}: its workers left the cluster and dask recomputes what they held"
                + (f"; its ${float(price):.4g}/h stops billing" if isinstance(price, (int, float)) else "")
                + (". The head is gone: the cluster is lost." if role == "head" else _then(replace())))
        registry.event(cluster_id, status, line)
        logger.warning("cumulo: %s", line)
        if say is not None:
            say(line)
        lines.append(line)
    return lines
