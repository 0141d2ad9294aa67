"""The object a user holds: one Dask cluster, its client, and its registry row.

``connect()`` turns user arguments into a ClusterSpec, asks the provider for a
scheduler (or finds a running one by name in the registry), attaches a
distributed.Client, probes the environment (versions, GPUs) and switches dask's
dataframe backend to match the workers. Providers stay thin; everything shared
lives here.

Sync and async from one implementation, as distributed does: public methods
call ``self.sync(self._method)``; with ``asynchronous=True`` they return
awaitables, and ``await``, ``with`` and ``async with`` all work.

What a connect() call asks for is decided in :mod:`cumulo.connecting`; how a start
runs (and is undone when it fails) in :mod:`cumulo.starting`; the client, environment
facts and dataframe backend are :mod:`cumulo.clientlink`'s; which clusters this
process holds, :mod:`cumulo.attached`'s. The code
that watches a cluster (watchdog, meter, usage) reaches it through the protocols
of :mod:`cumulo.life.watched`, which Cluster implements.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from typing import Any

from dask.utils import parse_timedelta
from distributed import Client
from distributed.security import Security
from distributed.utils import LoopRunner, SyncMethodMixin

from . import attached, config, connecting, display
from .clientlink import ClientLink, sizes
from .envsync import envcheck
from .exceptions import ClusterLost, ClusterNotFound, ConnectTimeout, NotOwner, ProviderError, SpecError
from .life import watchdog
from .life.lifecycle import BY_KERNEL, Lifecycle
from .life.names import new_name
from .life.registry import ClusterRecord, Registry
from .notebook_server import browser_link
from .providers import Deployment, Provider, get_provider
from .providers.address import security_from
from .spec import MAX_WORKERS, ClusterSpec
from .starting import Starting
from .widgets import live_bundle
from .widgets.usage_view import UsageView

__all__ = ["Cluster", "close_all", "connect", "current"]

logger = logging.getLogger("cumulo")

#: How long an interrupted connect() waits for its cleanup (terminating what launched) to finish.
_INTERRUPT_CLEANUP_S = 300.0

def current() -> Cluster:
    """The cluster most recently connected in this process (ClusterNotFound if none is open)."""
    cluster = attached.current_or_none()
    if cluster is None or cluster.status != "running":
        raise ClusterNotFound("no cluster is connected in this process: call cumulo.connect() first")
    return cluster


def connect(
    target: str | None = None,
    *,
    name: str | None = None,
    security: Security | dict[str, str] | None = None,
    allow_insecure: bool | None = None,
    asynchronous: bool = False,
    registry: Registry | None = None,
    confirm: bool = False,
    keep_alive: bool = False,
    spec_from: Any = None,
    **spec_fields: Any,
) -> Cluster:
    """Attach this notebook to a Dask cluster and return it.

    ``connect()`` starts the embedded default on this machine (CUDA workers when
    NVML reports GPUs). ``connect("tcp://host:port")`` or ``connect("tls://...",
    security=...)`` attaches to a running scheduler. ``connect("lambda", gpu=...)``
    and other provider names launch through that provider. ``connect(name="etl")``
    alone re-attaches to the open cluster called etl, from any process.

    Spec fields (``workers``, ``threads_per_worker``, ``memory_limit``, ``gpu``,
    ``budget``, ``idle_timeout``, ...) are validated by ClusterSpec before
    anything starts. ``confirm=True`` accepts a paid offer above the
    ``confirm-above-per-hour`` threshold of its provider without asking.
    ``keep_alive=True`` lets the cluster outlive this kernel (no kernel lease;
    budget and idle timeout still apply): stop it later with `cumulo down NAME`.
    A provider that takes its own options (a dask-gateway's cluster options) gets the
    keyword arguments that are not spec fields, e.g. ``connect("gateway://...", worker_cores=2)``.
    ``spec_from="NOTEBOOK.ipynb"`` (str or os.PathLike) takes the provider and the spec
    fields a shared notebook carries (arguments given here win) and prints its last run
    and the current estimate first (cumulo.share.merge_spec_from).
    """
    asked = connecting.request(target, name=name, registry=registry, confirm=confirm, keep_alive=keep_alive,
                               spec_from=spec_from, spec_fields=spec_fields, keywords=connect.__kwdefaults__ or ())
    if asked.record is not None:
        return Cluster._from_record(asked.record, registry=asked.registry, security=security,
                                    asynchronous=asynchronous)
    assert asked.spec is not None
    provider = get_provider(asked.spec.provider, security=security_from(security), allow_insecure=allow_insecure)
    return Cluster(asked.spec, provider=provider, registry=asked.registry, asynchronous=asynchronous)


class Cluster(Starting, SyncMethodMixin):
    """A Dask cluster attached to this process. Create with :func:`connect`.

    Attributes: ``client`` (distributed.Client), ``name``, ``id``, ``provider``,
    ``backend`` ('cudf' or 'pandas'), ``spec``, ``registry``, ``status``
    ('starting', 'running', 'closed', 'lost', 'failed').
    """

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        provider: Provider,
        registry: Registry,
        asynchronous: bool = False,
        _record: ClusterRecord | None = None,
        _security: Security | None = None,
    ) -> None:
        self.spec = spec
        self.registry = registry
        #: The one writer of this cluster's registry state (cumulo.life.lifecycle).
        self.lifecycle = Lifecycle(registry)
        #: Lease, spend and guards on this cluster's loop, once it runs (cumulo.life.watchdog).
        self.watchdog: watchdog.Watchdog | None = None
        #: Who stopped this cluster, when another process did (the row's note).
        self.stopped_by: str | None = None
        self._usage: UsageView | None = None
        self._provider = provider
        self._record = _record
        self._security = _security
        self._deployment: Deployment | None = None
        self._link = ClientLink(asynchronous=asynchronous)
        #: The scheduler's address once connected (kept after close, for display and logs).
        self.address: str | None = None
        self.status = "created"
        self.name = _record.name if _record else (spec.name or new_name())
        self.id = _record.id if _record else ""
        self._asynchronous = asynchronous
        self._loop_runner = LoopRunner(asynchronous=asynchronous)
        self._loop: Any = None
        if not asynchronous:
            self._loop_runner.start()
            self._start_blocking()

    def _start_blocking(self) -> None:
        """Run _start on the cluster's loop; on Ctrl-C cancel it and wait for its cleanup.

        A start interrupted half way may have launched billable instances: the
        cancellation runs the start's own cleanup, and we wait (bounded) for it
        before letting the KeyboardInterrupt through.
        """
        finished = threading.Event()

        async def run() -> None:
            try:
                await self._start()
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop.asyncio_loop)
        try:
            # Wake up regularly: a SIGINT the OS delivers to another thread only raises
            # KeyboardInterrupt here once this thread runs Python code again.
            while not finished.wait(0.1):
                pass
            future.result()
        except KeyboardInterrupt:
            logger.warning("cumulo: connect interrupted; stopping what %r had started ...", self.name)
            future.cancel()
            if not finished.wait(_INTERRUPT_CLEANUP_S):
                logger.error("cumulo: cleanup of %r is still running; check `cumulo ls`", self.name)
            self._loop_runner.stop()
            raise

    @property
    def client(self) -> Client | None:
        """The distributed.Client attached to the scheduler (None before it connects)."""
        return self._link.client

    @property
    def backend(self) -> str:
        """The dataframe backend the workers chose: 'cudf' where they have GPUs, else 'pandas'."""
        return self._link.backend

    @property
    def loop(self) -> Any:
        """The event loop this cluster's client and manager run on (cached once it runs)."""
        if self._loop is None:
            self._loop = self._loop_runner.loop
        return self._loop

    @classmethod
    def _from_record(
        cls,
        record: ClusterRecord,
        *,
        registry: Registry,
        security: Security | dict[str, str] | None,
        asynchronous: bool,
    ) -> Cluster:
        """Re-attach to an open cluster known to the registry."""
        spec = ClusterSpec.from_dict(record.spec)
        provider = get_provider(record.provider, security=security_from(security))
        sec = provider.user_security if security is not None else provider.security(record)
        return cls(spec, provider=provider, registry=registry, asynchronous=asynchronous, _record=record,
                   _security=sec)

    def __await__(self) -> Any:
        async def started() -> Cluster:
            if self.status == "created":
                await self._start()
            return self

        return started().__await__()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def owner(self) -> bool:
        """Whether this process started the cluster (and so can scale it)."""
        return self._deployment is not None

    def close(self) -> Any:
        """Stop the cluster (workers and scheduler) and close its registry row.

        For a cluster cumulo only attached to by address, this disconnects and
        leaves the scheduler running for whoever started it.
        """
        if not self._asynchronous and self.status in ("closed", "failed") and not self._loop_runner_alive():
            return None
        if not self._asynchronous and self.status == "closed":
            # closed already: on its loop by the watchdog (which then stops the loop from another thread) or let
            # go after a stop elsewhere. Nothing is left to run there, and a call queued on a loop that is
            # stopping would wait forever (seen in CI): only make sure the loop stops.
            self._loop_runner.stop()
            return None
        result = self.sync(self._close)
        if not self._asynchronous and self.status == "closed":
            self._loop_runner.stop()
        return result

    def _loop_runner_alive(self) -> bool:
        return bool(getattr(self._loop_runner, "_started", False))

    async def _close(self, *, why: str = BY_KERNEL, from_loop: bool = False) -> None:
        """Stop (or, for a scheduler not ours, detach from) the cluster through the lifecycle.

        ``from_loop``: called by the watchdog on the cluster's own loop, which then
        must be stopped from another thread.
        """
        if self.status in ("closed", "closing"):
            return
        if self.watchdog is not None:
            if self.status == "running":
                try:
                    await self.watchdog.final_reading()
                except Exception:
                    logger.debug("cumulo: no final ledger reading of %r", self.name, exc_info=True)
            self.watchdog.stop()
        was = self.status
        self.status = "closing"
        try:
            await self._link.close()
            rec = self.registry.get(self.id) if self.id else None
            if rec is not None and rec.is_open:
                await self.lifecycle.stop(rec, self._provider, why=why, deployment=self._deployment)
            elif self._deployment is not None:
                await self._deployment.close()
        except BaseException:
            self.status = was  # close() can be called again; the row says "stop failed: may still bill"
            raise
        self.status = "closed"
        self._link.restore_backend()
        attached.forget(self)
        if from_loop and not self._asynchronous:
            threading.Thread(target=self._loop_runner.stop, name="cumulo-loop-stop", daemon=True).start()

    async def let_go(self, record: ClusterRecord) -> None:
        """Another process stopped this cluster (``record`` is its row): let go of it, and remember who.

        For the watchdog (cumulo.life.watched.Watched), on the cluster's loop: nothing is
        stopped, except this process's own children of a cluster that lived in it.
        """
        self.stopped_by = record.note or f"its registry row is {record.state}"
        self.status = "closed" if not record.is_open else "lost"
        logger.warning("cumulo: cluster %r was stopped elsewhere: %s", self.name, self.stopped_by)
        await self._link.close()
        if self._deployment is not None and self._provider.lives_in_owner_process:
            try:  # its processes are children of this one: reap them
                await asyncio.wait_for(self._deployment.close(), 30)
            except Exception:
                logger.debug("cumulo: closing the remains of %r failed", self.name, exc_info=True)
        self._link.restore_backend()
        attached.forget(self)

    def disconnect(self) -> Any:
        """Close this process's client and leave the cluster running (re-attach with connect(name=...))."""
        if self.owner and self._provider.lives_in_owner_process:
            raise NotOwner(
                f"the {self.provider} cluster {self.name!r} lives in this process and stops with it; "
                "use close() to stop it, or keep this kernel running"
            )
        result = self.sync(self._disconnect)
        if not self._asynchronous:
            self._loop_runner.stop()
        return result

    async def _disconnect(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            if self.client is not None and self._provider.bills_independently:
                await watchdog.set_scheduler_lease(self.client, None)  # left running on purpose: the head must not stop
        await self._link.close()
        if self.watchdog is not None and self.status == "running":
            self.watchdog.release_lease()
        self.status = "closed"
        self._link.restore_backend()
        attached.forget(self)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Cluster:
        await self
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._close()

    # -- cost and guards (cumulo.cost.metering, cumulo.life.guards) -------------------------------

    @property
    def usage(self) -> UsageView:
        """What this cluster used and cost: ``.summary()``, ``.spend()``, ``.cells()``, ``.widget()``, ``.plot()``."""
        if self._usage is None:
            self._usage = UsageView(self)
        return self._usage

    @property
    def record(self) -> ClusterRecord | None:
        """Its registry row as this process last read it (None before it exists); ``registry.get(id)`` is fresh."""
        return self._record

    @property
    def budget(self) -> float | None:
        """The spending limit in dollars (its row's, else its spec's), or None."""
        return (self._record.budget if self._record is not None else None) or self.spec.budget

    async def stop_for(self, why: str, *, from_loop: bool = False) -> None:
        """Stop the cluster for ``why`` as close() does, on its loop (for the watchdog: cumulo.life.watched.Watched).

        ``from_loop``: called by a periodic callback on the cluster's own loop, which then
        is stopped from another thread.
        """
        await self._close(why=why, from_loop=from_loop)

    async def scale_to(self, n: int) -> None:
        """``scale(n)`` on the cluster's loop (for the watchdog: cumulo.life.watched.Watched)."""
        await self._scale(n)

    def replace_lost(self) -> str:
        """Launch instances in place of those the cloud took back, where this process can (the watchdog asks,
        on the cluster's loop); the sentence that tells the user what happens."""
        if self._deployment is None:
            return "Not replaced: only the kernel that launched the cluster can add instances to it."
        return self._deployment.replace_lost()

    def detach(self) -> None:
        """Let this cluster outlive the kernel: no lease (budget and idle still apply, via `cumulo reap`);
        stop it later with `cumulo down NAME`."""
        if self._provider.lives_in_owner_process:
            raise NotOwner(
                f"the {self.provider} cluster {self.name!r} runs inside this kernel and stops with it, so it "
                "cannot be detached; start it on hosts or a provider that outlive the kernel to keep it running"
            )
        self.lifecycle.detach(self.id)

    # -- state ---------------------------------------------------------------------------

    async def _alive(self) -> None:
        """Raise ClusterLost (and record it) if the scheduler no longer answers."""
        if self.stopped_by is not None:
            raise ClusterLost(
                f"cluster {self.name!r} was stopped elsewhere ({self.stopped_by}); results not yet gathered are "
                f"gone. Start a new one with cumulo.connect(name={self.name!r}, ...) or cumulo.connect().")
        if self.status != "running" or self.client is None:
            raise ClusterLost(f"cluster {self.name!r} is {self.status}; connect again with cumulo.connect()")
        try:
            await asyncio.wait_for(self.client.scheduler.identity(), 5)
        except (OSError, asyncio.TimeoutError) as exc:
            self.status = "lost"
            assert self._record is not None
            if not self.lifecycle.lost(self._record, self._provider, "scheduler stopped answering"):
                raise ClusterLost(
                    f"the scheduler of cluster {self.name!r} at {self.address} stopped answering. Its instances "
                    f"may still be running and billing: close() or `cumulo down {self.name}` terminates them."
                ) from exc
            raise ClusterLost(
                f"the scheduler of cluster {self.name!r} at {self.address} stopped answering "
                "(killed, crashed, or stopped elsewhere). Results not yet gathered are gone; "
                f"start a new cluster with cumulo.connect(name={self.name!r}, ...) or cumulo.connect()."
            ) from exc

    def info(self) -> Any:
        """Live facts from the scheduler: workers, threads, memory (raises ClusterLost if it is gone)."""
        return self.sync(self._info)

    async def _info(self) -> dict[str, Any]:
        await self._alive()
        assert self.client is not None
        ident = await self.client.scheduler.identity()
        return {
            "name": self.name,
            "provider": self._provider.name,
            "address": ident.get("address"),
            **sizes(ident),
            "gpus": self.facts.gpus if self.facts else 0,
            "gpu_model": self.facts.gpu_model if self.facts else None,
            "backend": self.backend,
        }

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard of this cluster, as the user's browser can open it (None if it serves none).

        In a kernel of a Jupyter server: the server's dashboard route (behind its login, reached
        over the server's SSH tunnel for hosts whose dashboard listens on their loopback); else,
        and for providers that proxy dashboards themselves (dask-gateway), the scheduler's own link.
        """
        direct = self.direct_dashboard_link
        if not self.id:  # not registered: the server's route would not know it
            return direct
        return browser_link(self.name, direct, provider_proxies=self._provider.proxies_dashboard)

    @property
    def direct_dashboard_link(self) -> str | None:
        """The dashboard's own address, as its scheduler reports it (what the registry keeps)."""
        if self._deployment is not None and self._deployment.dashboard_link:
            return self._deployment.dashboard_link
        if self.client is None:
            return None
        try:
            return self.client.dashboard_link
        except Exception:
            return None

    @property
    def provider(self) -> str:
        """The provider's name ('local', 'address', 'lambda', ...)."""
        return self._provider.name

    @property
    def facts(self) -> envcheck.ClusterFacts | None:
        """What the environment check learned on connect."""
        return self._link.facts

    # -- sizing --------------------------------------------------------------------------

    def scale(self, n: int) -> Any:
        """Ask for ``n`` workers (only the process that started the cluster can)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_WORKERS:
            raise SpecError(f"scale(n={n!r}): n must be a whole number between 0 and {MAX_WORKERS}")
        return self.sync(self._scale, n)

    async def _scale(self, n: int) -> None:
        await self._alive()
        if self._deployment is None or not self._provider.owns_scheduler:
            raise NotOwner(self._not_owner("scale"))
        if not self._provider.can_scale:
            raise ProviderError(f"{self.provider} clusters cannot be scaled in place yet: close this one and "
                                "connect again with workers=N")
        await self._deployment.scale(n)
        self.registry.event(self.id, "scale", f"scaled to {n} workers")

    def adapt(self, minimum: int = 0, maximum: int = 4) -> Any:
        """Let dask add and remove workers between ``minimum`` and ``maximum`` as load changes."""
        for label, v in (("minimum", minimum), ("maximum", maximum)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_WORKERS:
                raise SpecError(f"adapt({label}={v!r}) must be a whole number between 0 and {MAX_WORKERS}")
        if minimum > maximum:
            raise SpecError(f"adapt(minimum={minimum}, maximum={maximum}): minimum must not exceed maximum")
        if self._deployment is None or not self._provider.owns_scheduler:
            raise NotOwner(self._not_owner("adapt"))
        if not self._provider.can_scale:
            raise ProviderError(f"{self.provider} clusters cannot scale adaptively yet: choose workers= at connect")
        return self._deployment.adapt(minimum, maximum)

    def wait_for_workers(self, n: int, timeout: float | str | None = None) -> Any:
        """Block until ``n`` workers are connected (ClusterLost if the scheduler goes away)."""
        return self.sync(self._wait_for_workers, n, timeout)

    async def _wait_for_workers(self, n: int, timeout: float | str | None) -> None:
        await self._alive()
        assert self.client is not None
        seconds = parse_timedelta(timeout or config.get("connect.timeout"))
        try:
            await asyncio.wait_for(self.client.wait_for_workers(n), seconds)
        except asyncio.TimeoutError as exc:
            raise ConnectTimeout(f"fewer than {n} workers joined {self.name!r} within {seconds:g}s") from exc

    def _not_owner(self, what: str) -> str:
        if not self._provider.owns_scheduler:
            return f"cluster {self.name!r} was started outside cumulo; {what} it where it was started"
        return (
            f"cluster {self.name!r} was started by another process (pid {self._record.owner_pid if self._record else '?'}); "
            f"{what} it from there"
        )

    # -- display -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return display.cluster_text(self)

    def _repr_html_(self) -> str:
        return display.cluster_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The card, with a live cost/usage meter under it in Jupyter (cumulo.widgets.live_bundle)."""
        return live_bundle(self, self._repr_html_(), repr(self))


def close_all() -> None:
    """Stop the clusters this process started and let go of the others (at exit, and `cumulo run`'s teardown).

    A cluster this process only re-attached to by name belongs to another
    process (a kernel, the Jupyter server): this must not stop it.
    """
    for cluster in list(attached.live):
        if cluster.status == "running" and not cluster._asynchronous:
            try:
                if cluster.owner:
                    cluster.close()
                else:
                    cluster.sync(cluster._disconnect)
            except Exception:
                logger.exception("could not close cluster %r at exit", cluster.name)


atexit.register(close_all)

