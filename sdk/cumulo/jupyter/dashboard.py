"""Where the Jupyter server finds each cluster's Dask dashboard, for the route that proxies it.

The browser opens ``{base_url}cumulo/clusters/{name}/dashboard/status``: the
server's login applies, and the dashboard itself never has to face the browser's
network. This module decides, from the registry row alone, which ``host:port``
that route forwards to (cumulo.jupyter.dashboard_proxy does the forwarding):

- a cluster whose provider names no SSH host (local, a scheduler address): the
  dashboard address its scheduler reported, directly;
- one whose provider names the SSH host its dashboard listens on
  (``Provider.dashboard_host``: ssh:// hosts, cloud heads): a local port forward
  over SSH to that host's loopback (cumulo.jupyter.tunnels), opened on first use
  and closed by :meth:`Dashboards.sweep` once the cluster is no longer running;
- one whose provider proxies its dashboard itself (``proxies_dashboard``:
  dask-gateway): :class:`Elsewhere`, and the route redirects there.

Tornado-free, so that it is tested directly. Errors are cumulo's: an unknown,
stopped or dashboard-less cluster is a ClusterNotFound (the route's 404).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..exceptions import ClusterNotFound, CumuloError
from ..life.inventory import find
from ..life.registry import Registry
from ..providers import get_provider
from ..spec import validate_name
from .tunnels import Tunnels

__all__ = ["Dashboards", "Elsewhere", "Target"]

log = logging.getLogger("cumulo.jupyter")

#: How often (seconds) the server closes the tunnels of clusters that stopped.
SWEEP_INTERVAL = 5.0
#: How long (seconds) a resolved target is reused without reading the registry again: a page and its
#: scripts, plots and JSON polls come in bursts. A target that stops answering is forgotten at once.
REUSE_SECONDS = 2.0


@dataclass(frozen=True)
class Target:
    """Where the route forwards: ``host:port`` as this server reaches it, and how (for logs and messages)."""

    host: str
    port: int
    via: str = "direct"


class Elsewhere(CumuloError):
    """The cluster's provider serves its dashboard itself: ``link`` is where the browser goes."""

    def __init__(self, link: str) -> None:
        super().__init__(f"this cluster's dashboard is served at {link}")
        self.link = link


class Dashboards:
    """Resolves a cluster's name to its dashboard's :class:`Target`, owning the SSH tunnels that needs."""

    def __init__(self, registry: Registry, tunnels: Tunnels | None = None) -> None:
        self.registry = registry
        self.tunnels = tunnels if tunnels is not None else Tunnels()
        self._sweeper: asyncio.Task[None] | None = None
        self._recent: dict[str, tuple[float, Target]] = {}
        #: cluster id -> why the server could not reach its dashboard the last time it tried (the card says it)
        self._problems: dict[str, str] = {}

    def problem(self, cluster_id: str) -> str | None:
        """Why the last attempt to reach this cluster's dashboard failed (what to configure); None: it did not."""
        return self._problems.get(cluster_id)

    async def target(self, name: str) -> Target:
        """Where cluster ``name``'s dashboard is reached from this server (see the module docstring).

        A target resolved less than :data:`REUSE_SECONDS` ago is reused; :meth:`forget` drops it."""
        loop = asyncio.get_running_loop()
        recent = self._recent.get(name)
        if recent is not None and loop.time() - recent[0] < REUSE_SECONDS:
            return recent[1]
        target = await self._resolve(name)
        self._recent[name] = (loop.time(), target)
        return target

    def forget(self, name: str) -> None:
        """Resolve ``name`` from the registry again next time (its dashboard did not answer)."""
        self._recent.pop(name, None)

    async def _resolve(self, name: str) -> Target:
        try:
            validate_name(name)
        except CumuloError:
            raise ClusterNotFound(f"no cluster named {name!r}: cluster names are lower-case letters, digits, "
                                  "'.', '_' and '-'") from None
        rec = find(name, self.registry, open_only=True)
        if rec is None:
            raise ClusterNotFound(f"no running cluster named {name!r}: the Compute sidebar lists the open ones "
                                  "(`cumulo ls` in a terminal)")
        if rec.state != "running":
            raise ClusterNotFound(f"cluster {name!r} is {rec.state}: its dashboard is served once it runs")
        link = urlsplit(rec.dashboard or "")
        if link.scheme not in ("http", "https") or not link.hostname or link.port is None:
            raise ClusterNotFound(f"cluster {name!r} serves no Dask dashboard (its scheduler reported none)")
        provider = get_provider(rec.provider)
        if provider.proxies_dashboard:
            raise Elsewhere(rec.dashboard or "")
        try:
            host = provider.dashboard_host(rec, self.registry.resources(cluster_id=rec.id))
            if host is None:
                return Target(link.hostname, link.port)
            self.start()  # the first tunnel starts the sweep that closes it once its cluster stops
            port = await self.tunnels.port(rec.id, host, link.port)
        except CumuloError as exc:  # no key the host takes, a refused host key, no tunnel possible: kept for the card
            self._problems[rec.id] = str(exc)
            raise
        self._problems.pop(rec.id, None)
        return Target("127.0.0.1", port, via=f"ssh tunnel to {host.label}")

    async def sweep(self) -> list[str]:
        """Close the tunnels of clusters that are no longer running; the cluster ids closed."""
        for cluster_id in [k for k in self._problems if not _running(self.registry, k)]:
            del self._problems[cluster_id]
        keys = self.tunnels.keys()
        if not keys:
            return []
        running = {k for k in keys if _running(self.registry, k)}
        closed = await self.tunnels.keep_only(running)
        if closed:
            self._recent.clear()
        return closed

    def start(self, interval: float = SWEEP_INTERVAL) -> None:
        """Sweep every ``interval`` seconds on the running loop, until :meth:`stop` (again: no-op)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_every(interval),
                                                                   name="cumulo-dashboard-tunnels")

    async def _sweep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:  # a registry that could not be read this time: try again next time
                log.exception("cumulo: checking the dashboard tunnels failed; trying again in %.0fs", interval)

    async def stop(self) -> None:
        """Stop sweeping and close every tunnel; never raises (the server is shutting down)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except (asyncio.CancelledError, Exception):
                pass
            self._sweeper = None
        await self.tunnels.close_all()


def _running(registry: Registry, cluster_id: str) -> bool:
    try:
        return registry.get(cluster_id).state == "running"
    except KeyError:
        return False
