"""The contract every compute backend implements: "give me a scheduler for this spec".

A provider is thin: it turns a ClusterSpec into a running Dask scheduler (and
workers) and knows how to stop them. Everything else (the client, the registry
row and its state, the environment check, the backend switch, widgets, guards)
is shared: cluster.py and lifecycle.py. Implement:

  - ``Provider.preflight(spec)``: refuse what cannot work before anything starts
    (no registry row is written for a refusal).
  - ``Provider.launch(spec, cluster_id=..., checkpoint=...)`` -> Deployment.
    Report each billable resource through ``checkpoint`` *before* it can bill;
    on any failure stop what did start before raising. Never write the registry.
  - ``Provider.stop(record, checkpoint)``: stop a cluster from any process (the
    CLI, the Jupyter server's reaper) using only its row and its recorded
    resources. Return only once the provider confirms the resources are gone.
  - ``Provider.security(record)``: the distributed.Security to reach that scheduler.
  - optionally ``Provider.sweep_orphans(registry, ...)``: resources this provider
    holds that no open cluster owns (e.g. a kernel killed mid-launch).
  - optionally ``Provider.confirm_gone(record, checkpoint)``: whether a cluster whose
    scheduler stopped answering is confirmed gone at the provider (nothing bills).

Declare what the backend can do with the class flags below; generic code asks
the flags, never a provider's name. Options come from ``cumulo.<name>.*``
config, plus the few connect() arguments every provider accepts.

Declare, too, what generic code needs from the provider (docs/providers.md):

  - ``config_file``: a YAML file with ``defaults:`` and ``schema:`` of its own
    section ``cumulo.<name>.*``, merged into cumulo's config and validated with it
    when the class is defined;
  - ``credentials``: the credentials it reads (credentials.Credential): their
    environment variables are removed from local workers, ``cumulo share`` removes
    their values (and their format, if given) from notebooks;
  - ``price_file`` (bundled catalog rows, a CSV with catalog.COLUMNS) and, with
    ``live_prices``, ``fetch_prices(today)`` for ``cumulo prices --refresh``;
  - ``sweeps_orphans`` and ``sweep_orphans``, which ``cumulo reap`` runs.

and get: connect(), re-attach by name, close, `cumulo down`, reaping, listing.
Providers are found by name in providers/__init__.py's table, or, for other
packages, through the ``cumulo.providers`` entry-point group.
"""

from __future__ import annotations

import abc
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import yaml
from distributed.security import Security

from .. import config
from ..exceptions import NotOwner, ProviderError
from ..life.registry import ClusterRecord, Registry
from ..security.credentials import Credential
from ..spec import ClusterSpec

if TYPE_CHECKING:
    from ..life.checkpoint import Checkpoint
    from ..life.registry import ResourceRecord
    from .ssh.target import Host

__all__ = ["Deployment", "Orphan", "Provider", "Say", "add_config_section", "shutdown_scheduler"]


class Say:
    """A provider's progress lines ("launching ...", "environment built in 9.7s"): always to its logger,
    to the caller's callback when there is one (the sidebar's launch card), else to stderr when ``echo``
    (a notebook shows stderr under the running cell, so a long launch is never silent)."""

    def __init__(self, callback: Callable[[str], None] | None = None, *, echo: bool = False,
                 logger: logging.Logger | None = None) -> None:
        self.callback = callback
        self.echo = echo
        self.logger = logger or logging.getLogger("cumulo")

    def __call__(self, message: str) -> None:
        self.logger.info("%s", message)
        if self.callback is not None:
            self.callback(message)
        elif self.echo:
            print(f"cumulo: {message}", file=sys.stderr, flush=True)


class Deployment:
    """A running scheduler handed back by a provider, and how to manage it.

    Only the process that launched a cluster holds its Deployment; other
    processes reach the cluster through the registry and Provider.stop.
    """

    #: The provider's price for this deployment in $/hour, when the provider bills (None: no price known).
    rate_per_hour: float | None = None
    #: Local packages (wheel name -> bytes) the workers still need; the cluster installs them over its
    #: TLS link once the scheduler answers (envsync.ship_wheels), before the version check.
    local_wheels: dict[str, bytes] | None = None
    local_digest: str = ""
    #: Why the lifecycle is stopping this deployment, set just before close() (lifecycle.BY_KERNEL for the
    #: user's own close); empty when close() is called otherwise.
    stop_reason: str = ""

    def __init__(
        self,
        address: str,
        *,
        security: Security | None = None,
        dashboard_link: str | None = None,
        manager: Any = None,
    ) -> None:
        self.address = address
        self.security = security
        self.dashboard_link = dashboard_link
        #: An object with scale()/adapt() (e.g. a distributed SpecCluster) when the provider has one.
        self.manager = manager

    async def scale(self, n: int) -> None:
        """Ask for ``n`` workers."""
        if self.manager is None:
            raise NotOwner("this cluster was started outside cumulo; scale it where it was started")
        result = self.manager.scale(n)
        if hasattr(result, "__await__"):
            await result

    def adapt(self, minimum: int, maximum: int) -> Any:
        """Let dask's adaptive policy keep between ``minimum`` and ``maximum`` workers."""
        if self.manager is None:
            raise NotOwner("this cluster was started outside cumulo; adapt it where it was started")
        return self.manager.adapt(minimum=minimum, maximum=maximum)

    def replace_lost(self) -> str:
        """Launch workers in place of those the provider took back (spot interruptions), where it can; the
        sentence that tells the user what happens. Here: nothing, said so."""
        return "Not replaced: this kind of cluster does not replace what its provider takes back."

    async def close(self) -> None:
        """Stop everything this deployment started and return once it is confirmed gone."""
        if self.manager is not None:
            result = self.manager.close()
            if hasattr(result, "__await__"):
                await result


@dataclass(frozen=True)
class Orphan:
    """A billable resource at a provider that no open cluster of this registry owns."""

    provider: str
    resource_id: str
    name: str
    cluster_id: str | None
    reason: str
    status: str
    kind: str = "instance"
    where: str = ""
    price_per_hour: float | None = None
    running_since: float | None = None
    #: Whether this installation created it (False: another laptop, venv or teammate may be using it).
    ours: bool = True
    #: What the sweep did: "terminated", "would terminate", "reported" (left alone), or "FAILED: ...".
    action: str = "reported"

    @property
    def cost_so_far(self) -> float | None:
        """Estimated $ since it started (None when its start time or price is unknown)."""
        if self.price_per_hour is None or self.running_since is None:
            return None
        return self.price_per_hour * max(0.0, time.time() - self.running_since) / 3600.0

    def line(self) -> str:
        """One line for `cumulo reap` output."""
        rate = f"${self.price_per_hour:.2f}/h" if self.price_per_hour is not None else "price unknown"
        spent = f", about ${self.cost_so_far:.2f} so far" if self.cost_so_far is not None else ""
        age = ""
        if self.running_since is not None:
            age = f", up {(time.time() - self.running_since) / 3600.0:.1f} h"
        where = f", {self.where}" if self.where else ""
        return (f"{self.provider}: {self.action} {self.resource_id} {self.name} ({self.kind}{where}, {self.status}"
                f"{age}): {rate}{spent}; {self.reason}")


class Provider(abc.ABC):
    """A compute backend. Subclasses set ``name``, the capability flags, and implement launch/stop."""

    name: ClassVar[str]
    #: The cluster runs inside the process that launched it and stops with it (it cannot be detached).
    lives_in_owner_process: ClassVar[bool] = False
    #: The Jupyter server may launch clusters of this provider from the sidebar.
    launchable_from_server: ClassVar[bool] = True
    #: Closing a cluster of this provider stops its scheduler (False: cumulo only detaches).
    owns_scheduler: ClassVar[bool] = True
    #: Billable resources can outlive an unreachable scheduler (cloud instances). Then a
    #: scheduler that stops answering never closes the registry row: only a confirmed stop does.
    bills_independently: ClassVar[bool] = False
    #: The owner can scale the cluster in place.
    can_scale: ClassVar[bool] = True
    #: The provider has resources that can outlive a registry (see sweep_orphans).
    sweeps_orphans: ClassVar[bool] = False
    #: connect() keyword arguments that are not spec fields are this backend's own options
    #: (collected into ``spec.options``; the provider's preflight refuses names it does not know).
    takes_own_options: ClassVar[bool] = False
    #: Address schemes (``scheme://...``) whose targets this provider launches on or attaches to.
    schemes: ClassVar[tuple[str, ...]] = ()

    # -- what generic code needs from the provider (see the module docstring) -------------------
    #: YAML file with ``defaults:`` and ``schema:`` of the section ``cumulo.<name>.*``; None: no settings.
    config_file: ClassVar[str | os.PathLike[str] | None] = None
    #: The credentials the provider reads: removed from workers, looked for by ``cumulo share``.
    credentials: ClassVar[tuple[Credential, ...]] = ()
    #: Catalog rows bundled with the provider (CSV, catalog.COLUMNS; ``#`` comments); None: none.
    price_file: ClassVar[str | os.PathLike[str] | None] = None
    #: ``fetch_prices`` fetches current prices for ``cumulo prices --refresh``.
    live_prices: ClassVar[bool] = False
    #: The provider serves the dashboard through a proxy of its own (dask-gateway's): the link its
    #: scheduler reports is what the browser opens, not the Jupyter server's dashboard route.
    proxies_dashboard: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Merge the provider's own config section as soon as the class exists (before anything reads it)."""
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("config_file"):
            add_config_section(cls)

    @classmethod
    def fetch_prices(cls, today: str) -> list[dict[str, Any]]:
        """Current catalog rows (catalog.COLUMNS, ``as_of`` = ``today``) when ``live_prices``; raise a
        CumuloError (or httpx.HTTPError) when the source fails: the catalog then keeps the last good rows."""
        raise ProviderError(f"provider {cls.name!r} has no live price source")

    def __init__(
        self,
        *,
        security: Security | None = None,
        allow_insecure: bool | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        #: TLS given to connect() by the user (overrides what the provider would use).
        self.user_security = security
        self.allow_insecure = allow_insecure
        self.progress = progress

    async def running(self, client: Any, spec: ClusterSpec) -> None:
        """The cluster runs and this process's (asynchronous) client is connected, after a launch or a
        re-attach: a provider that keeps something going for the client starts it here (AWS: credentials
        forwarded to the workers). What it raises fails the connect. Default: nothing."""
        return None

    @classmethod
    def check_server_target(cls, address: str) -> None:
        """Refuse a launch target that a request asks the Jupyter server to reach with the server's own
        credentials, where that would send them to a host the request chose (SpecError). Default: any."""

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse a spec that cannot work here, before any row is written or anything starts."""

    @abc.abstractmethod
    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        """Start a scheduler and workers for ``spec``; on failure leave nothing running."""

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Stop a cluster known only from its registry row (from any process)."""
        if record.address:
            await shutdown_scheduler(record.address, self.security(record))

    def security(self, record: ClusterRecord) -> Security | None:
        """How to reach the scheduler of ``record`` (None: plain tcp on loopback)."""
        return self.user_security

    def dashboard_host(self, record: ClusterRecord, resources: list[ResourceRecord]) -> Host | None:
        """The SSH host on whose loopback this cluster's dashboard listens, for the Jupyter server's
        tunnel (cumulo.jupyter.tunnels); None: the server reaches the dashboard recorded in the row directly."""
        return None

    async def taken_back(self, record: ClusterRecord, resources: list[ResourceRecord]) -> list[tuple[str, str]]:
        """(instance id, status) of this running cluster's recorded instances (``resources``: its rows) that
        the provider took back without being asked (a preemption) and that the registry still bills. Asked
        by the owner's watchdog when workers leave. Default: none (nothing is taken back, or the cloud's own
        notices say it)."""
        return []

    async def confirm_gone(self, record: ClusterRecord, checkpoint: Checkpoint) -> bool:
        """Whether the provider confirms that nothing of this cluster runs or bills any more.

        Asked when a cluster that bills independently stops answering (its instances
        may have been terminated elsewhere: a console, another installation's sweep,
        a preemption). True lets the lifecycle close the row as lost at once instead
        of estimating spend for instances that are gone. Default: cannot tell.
        """
        return False

    async def sweep_orphans(
        self, registry: Registry, *, dry_run: bool = True, terminate_unknown: bool = False
    ) -> list[Orphan]:
        """Resources of this provider that no open cluster owns; unless ``dry_run``, stop this
        installation's own (and others' only with ``terminate_unknown``). Default: none."""
        return []


def add_config_section(cls: type[Provider]) -> None:
    """Merge ``cls.config_file`` (``defaults:`` and ``schema:``) as the section ``cumulo.<cls.name>.*``."""
    path = os.fspath(cls.config_file or "")
    try:
        fragment = config.read_yaml(path) or {}
        config.add_section(cls.name, defaults=fragment.get("defaults") or {}, schema=fragment["schema"])
    except (OSError, KeyError, yaml.YAMLError) as exc:
        raise ProviderError(f"provider {cls.name!r}: its config_file {path} needs `defaults:` and `schema:` "
                            f"({type(exc).__name__}: {exc}); fix the provider package") from exc


async def shutdown_scheduler(address: str, security: Security | None, *, timeout: float = 10.0) -> bool:
    """Ask a scheduler to shut down with its workers. Returns False if it was already unreachable."""
    from distributed.core import rpc

    try:
        async with rpc(address, connection_args=(security or Security()).get_connection_args("client"),
                       timeout=timeout) as scheduler:
            await scheduler.terminate()
    except (OSError, TimeoutError):
        return False
    return True
