"""A running cloud cluster, held by the process that launched it: scaled in place, its lost workers replaced.

Only that process holds the launch's state (the cluster's TLS, its SSH key, the
workers' first-boot script), so only it can add instances. ``scale(n)`` asks for
``n`` instances in all (the head counts: it runs a worker too): more are launched
through the same path as at launch (``Launcher.grow``: same market, then the
fallback) and bill from their request; fewer retire their workers through
dask's ``retire_workers`` (their data moves first) and are terminated,
confirmed, billing no more from then on. The head is never removed.

When the cloud takes instances back (a spot interruption, Lambda's
preemption), the kernel's watchdog asks for ``replace_lost()``: the missing
instances are launched again in the background, one line says which replaced
which, and a failure says so and leaves the cluster running with what it has.
``close()`` cancels a replacement in flight before the teardown, so nothing it
launched is missed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from distributed.core import rpc
from distributed.security import Security

from ...exceptions import ProviderError, SpecError
from ..base import Deployment
from .adapter import GONE
from .teardown import terminate_confirmed

if TYPE_CHECKING:
    from ...life.checkpoint import Checkpoint
    from ...life.registry import ResourceRecord
    from .launch import Launcher
    from .provider import CloudProvider

__all__ = ["CloudDeployment"]

logger = logging.getLogger("cumulo.cloud")

#: Instance states that no longer bill, or are on their way out.
_STOPPED = frozenset(GONE | {"interrupted", "terminating"})


class CloudDeployment(Deployment):
    """A running cloud cluster held by the process that launched it (see the module docstring)."""

    def __init__(self, address: str, *, security: Security, provider: CloudProvider, checkpoint: Checkpoint,
                 rate_per_hour: float, launcher: Launcher | None = None) -> None:
        super().__init__(address, security=security, dashboard_link=None)
        self.cluster_id = checkpoint.cluster_id
        self.rate_per_hour = rate_per_hour
        self._provider = provider
        self._checkpoint = checkpoint
        self._launcher = launcher
        #: How many instances the cluster should have: the launch's, then the last scale(n).
        self.wanted = launcher.plan.instances if launcher is not None else 0
        self._resizing = asyncio.Lock()
        self._replacing: asyncio.Task[None] | None = None
        self._closing = False  # set by close(): nothing may be launched any more

    # -- what the cluster has ----------------------------------------------------------------------

    def _billing(self) -> list[ResourceRecord]:
        """The cluster's instances that still bill, oldest first."""
        return [r for r in self._checkpoint.resources("instance") if r.state not in _STOPPED]

    def _head_billing(self) -> bool:
        head = self._launcher.head_id if self._launcher is not None else None
        return head is not None and any(r.resource_id == head for r in self._billing())

    def _launched_here(self) -> Launcher:
        if self._launcher is None:
            raise ProviderError(f"scaling this {self._provider.title} cluster needs the launch's state, which "
                                "this process does not hold: close it and connect again with workers=N")
        return self._launcher

    # -- scale ---------------------------------------------------------------------------------

    async def scale(self, n: int) -> None:
        """Have ``n`` instances in all (the head counts): launch more, or retire and terminate the newest."""
        launcher = self._launched_here()
        if self._closing:
            raise ProviderError("the cluster is being closed: nothing can be added to or removed from it")
        if n < 1:
            raise SpecError(f"scale({n}): a {self._provider.title} cluster keeps its head instance, which runs the "
                            "scheduler and a worker: ask for 1 or more, or close() the cluster to stop everything")
        async with self._resizing:
            self.wanted = n
            billing = self._billing()
            if n > len(billing):
                await self._grow(launcher, n - len(billing))
            elif n < len(billing):
                removable = [r for r in billing if r.resource_id != launcher.head_id]
                await self._shrink(launcher, removable[len(removable) - (len(billing) - n):])

    def adapt(self, minimum: int, maximum: int) -> Any:
        raise ProviderError(f"adaptive scaling of {self._provider.title} clusters is not supported yet: choose "
                            "workers= at connect, or scale(n)")

    async def _grow(self, launcher: Launcher, count: int) -> list[str]:
        async with self._provider._session() as cloud:
            return await launcher.grow(cloud, count)

    async def _shrink(self, launcher: Launcher, instances: list[ResourceRecord]) -> None:
        """Retire the workers on ``instances`` (their data moves to the others), then terminate them, confirmed."""
        ids = [r.resource_id for r in instances]
        say = self._provider._say()
        async with self._provider._session() as cloud:
            hosts = {addr for i in await cloud.instances() if i.id in ids for addr in (i.ip, i.private_ip) if addr}
            await self._retire(launcher, hosts)
            say(f"scaling down: terminating {', '.join(ids)}")
            await cloud.terminate(ids)
            for iid in ids:
                self._checkpoint.resource_state(iid, "terminating")
            await terminate_confirmed(
                cloud, ids, say=say, settings=self._provider.settings,
                on_terminated=lambda iid: self._checkpoint.billing_stops(iid, at=time.time(), state="terminated"))

    async def _retire(self, launcher: Launcher, hosts: set[str]) -> None:
        assert launcher.address is not None and launcher.security is not None
        args = launcher.security.get_connection_args("client")
        async with rpc(launcher.address, connection_args=args, timeout=30) as scheduler:
            info = await scheduler.identity()
            workers = [addr for addr, w in info.get("workers", {}).items() if w.get("host") in hosts]
            if workers:
                await scheduler.retire_workers(workers=workers, close_workers=True)

    # -- replacing what the cloud took back ----------------------------------------------------

    def replace_lost(self) -> str:
        """Start launching instances in place of those the cloud took back, in the background (once: a call while
        it runs changes nothing); the sentence that tells the user what happens."""
        title = self._provider.title
        if self._launcher is None:
            return "Not replaced: only the process that launched the cluster can add instances to it."
        if self._closing:
            return "Not replaced: the cluster is being closed."
        if not self._provider.settings.get("replace-taken-back"):
            return f"Not replaced ({self._provider.settings.key('replace-taken-back')} is off)."
        if not self._head_billing():
            return f"Not replaced: {title} took the head back, and the cluster with it."
        if self._replacing is not None and not self._replacing.done():
            return "A replacement is being launched."
        if len(self._billing()) >= self.wanted:
            return ""
        self._replacing = asyncio.ensure_future(self._replace(self._launcher))
        return "A replacement is being launched (same market, then the fallback)."

    async def _replace(self, launcher: Launcher) -> None:
        while not self._closing:
            async with self._resizing:
                billing = self._billing()
                missing = self.wanted - len(billing)
                if missing <= 0 or not self._head_billing():
                    return
                try:
                    ids = await self._grow(launcher, missing)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._tell("replace-failed", f"could not replace the instance(s) {self._provider.title} took "
                               f"back: {exc} The cluster runs on with {len(billing)} instance(s); scale({self.wanted}) "
                               "tries again.")
                    return
            self._tell("replaced", f"replaced what {self._provider.title} took back: launched "
                       + ", ".join(self._describe(iid) for iid in ids)
                       + f"; the cluster has {self.wanted} instances again")

    def _describe(self, iid: str) -> str:
        meta = next((r.meta for r in self._checkpoint.resources("instance") if r.resource_id == iid), {})
        facts = [str(meta[k]) for k in ("zone", "market") if meta.get(k)]
        price = meta.get("price_per_hour")
        if isinstance(price, (int, float)):
            facts.append(f"${price:.4g}/h")
        return f"{iid} ({', '.join(facts)})" if facts else iid

    def _tell(self, kind: str, line: str) -> None:
        """A line the user must see (the cell's stderr when no progress callback is set) and the event log."""
        self._checkpoint.event(kind, line)
        logger.warning("cumulo: %s", line)
        if self._provider.progress is not None:
            self._provider.progress(line)
        else:
            print(f"cumulo: {line}", file=sys.stderr, flush=True)

    # -- close ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop a replacement in flight, then terminate every instance (confirmed) and remove the firewall rule,
        SSH key and certificates. Safe to call again after a failure (each call uses a new API client)."""
        self._closing = True
        if self._replacing is not None and not self._replacing.done():
            self._replacing.cancel()
            await asyncio.wait([self._replacing])  # its own failure is not ours: teardown terminates what it launched
        await self._provider.teardown(self._checkpoint)
