"""What the JupyterLab extension can do with the user's clusters, without any web framework.

The REST handlers (handlers.py) are thin wrappers over :class:`ClusterManager`;
everything that decides something lives here so that it is tested directly,
without Tornado.

Ownership. A cluster launched from the Compute sidebar is started by the
Jupyter server process itself (the one process that outlives every kernel),
and the :class:`~cumulo.cluster.Cluster` object stays in this manager until it
is stopped or the server shuts down. Clusters started by kernels are only seen
through the shared registry: they can be stopped from here (through their
provider, as ``cumulo down`` does) but only scaled by their owner.

Money. Every figure says what it is: ``cost_kind`` is the registry's word for
it (e.g. "billed" from a provider's clock, "estimate" from a catalog or config
rate), and a cluster without a rate has ``rate_per_hour`` None, shown as
"no rate set", never as $0.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import config
from ..aio import blocking
from ..cost.metering import Usage, attribution, fetch_ledger_async, ranked, spend_of, stored_usage
from ..exceptions import ClusterNotFound, CumuloError, NotOwner, SpecError
from ..life.inventory import find, reconcile, stop_record, who
from ..life.lifecycle import Lifecycle
from ..life.reaper import sweep
from ..life.registry import OPEN_STATES, ClusterRecord, Registry
from ..providers import get_provider, known_providers, provider_class, provider_for_address
from ..providers.gateway.options import cluster_form
from ..providers.gateway.server_gateway import check_same
from ..providers.gateway.server_gateway import configured as server_gateway
from ..spec import MAX_WORKERS, ClusterSpec, validate_name
from ..widgets.meter import rank_cells, top_cells, usage_series

__all__ = ["ClusterManager", "Launch", "day_start", "to_json"]

log = logging.getLogger("cumulo.jupyter")

#: Fields of ClusterRecord passed through to the front end unchanged.
_PASSTHROUGH = (
    "name", "provider", "state", "address", "dashboard", "workers", "threads", "memory",
    "gpus", "gpu_model", "backend", "budget", "idle_timeout", "rate_per_hour", "cost_kind",
    "created", "closed", "note",
)


def day_start(now: float | None = None) -> float:
    """Local midnight before ``now``: "today" for the closed clusters and the spend meter."""
    when = _dt.datetime.fromtimestamp(time.time() if now is None else now)
    return when.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass
class Launch:
    """A cluster being launched by this server: shown as a card before its registry row is useful."""

    name: str
    spec: dict[str, Any]
    started: float = field(default_factory=time.time)
    state: str = "launching"
    message: str = "starting scheduler and workers"
    error: str | None = None
    future: Future[Any] | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.spec.get("provider", "local"),
            "state": self.state,
            "progress": self.message,
            "error": self.error,
            "created": self.started,
            "workers": self.spec.get("workers"),
            "budget": self.spec.get("budget"),
            "rate_per_hour": None,
            "spent": None,
            "owned_by": "server",
        }


class ClusterManager:
    """The user's clusters as the Jupyter server sees them.

    ``connect`` is the function used to launch (``cumulo.connect`` by default,
    replaceable in tests); ``reap`` the guard sweep (``cumulo.guards.reap``);
    ``read_ledgers`` reads the open clusters' ledgers, called as
    ``read_ledgers(records, samples=n)`` and returning ``{record id: ledger or None}``
    (by default one RPC to each scheduler, concurrently).
    Launches run on a small thread pool owned by the manager, so that a slow
    provider never blocks the server's event loop.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        connect: Callable[..., Any] | None = None,
        reap: Callable[..., Any] | None = None,
        read_ledgers: Callable[..., dict[str, dict[str, Any] | None]] | None = None,
        max_parallel_launches: int = 2,
        failed_launch_ttl: float = 600.0,
    ) -> None:
        self.registry = registry if registry is not None else Registry()
        self._connect = connect
        self._reap = reap
        self._read_ledgers = read_ledgers or _read_ledgers
        self._owned: dict[str, Any] = {}
        self._launches: dict[str, Launch] = {}
        #: why the server could not reach a cluster's dashboard, by cluster id (the server's Dashboards sets it)
        self.dashboard_problem: Callable[[str], str | None] = lambda cluster_id: None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_parallel_launches, thread_name_prefix="cumulo-launch")
        self._failed_ttl = failed_launch_ttl
        self._host = socket.gethostname()

    # -- listing -------------------------------------------------------------------------

    def list(self, *, now: float | None = None, live: bool = True) -> dict[str, Any]:
        """Open clusters, today's closed ones, launches in flight, and the totals of the spend meter.

        With ``live`` the usage ledger of every open cluster is read from its
        scheduler (one short RPC each, concurrently), so workers, GPUs and spend
        are what the scheduler says now, not what the registry last heard.
        """
        now = time.time() if now is None else now
        since = day_start(now)
        reconcile(self.registry)  # local clusters whose kernel died are gone: say so
        records = self.registry.list(since=since)
        opened = [r for r in records if r.is_open]
        ledgers = self._read_ledgers(opened, samples=_sparkline_points()) if (live and opened) else {}
        rows = [self._row(r, now=now, since=since, ledger=ledgers.get(r.id)) for r in records]
        names = {r["name"] for r in rows if r["state"] in OPEN_STATES}
        with self._lock:
            for name, launch in list(self._launches.items()):
                if launch.state == "failed" and now - launch.started > self._failed_ttl:
                    del self._launches[name]
                elif name not in names or launch.state == "failed":
                    rows.insert(0, launch.as_row())
        open_rows = [r for r in rows if r["state"] == "launching" or r["state"] in OPEN_STATES]
        rates = [r["rate_per_hour"] for r in open_rows if r.get("rate_per_hour") is not None]
        today = [r["spent_today"] for r in rows if r.get("spent_today") is not None]
        return {
            "clusters": rows,
            "totals": {
                "running": len(open_rows),
                "rate_per_hour": sum(rates) if rates else None,
                "unpriced": len(open_rows) - len(rates),
                "spent_today": sum(today) if today else None,
            },
            "day_start": since,
            "now": now,
        }

    def _row(
        self, rec: ClusterRecord, *, now: float, since: float, ledger: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One card's data: the registry row, live figures from the ledger, and money with its basis."""
        row: dict[str, Any] = {k: getattr(rec, k) for k in _PASSTHROUGH}
        end = rec.closed or now
        spend = _spend(rec, ledger, now)
        if rec.cost is not None and not rec.is_open:
            # the final figure recorded when the cluster closed wins over a recomputation
            row["spent"], row["cost_kind"] = rec.cost, rec.cost_kind or "estimate"
        else:
            row["spent"], row["cost_kind"] = spend.amount, spend.kind
        row["cost_basis"] = spend.basis
        if spend.rate_per_hour is not None:
            row["rate_per_hour"] = spend.rate_per_hour
        spent = row["spent"]
        if spent is not None and rec.created < since and rec.rate_per_hour is not None:
            # only the part of a long-running cluster's spend that fell today
            row["spent_today"] = rec.rate_per_hour * max(end - since, 0.0) / 3600.0
        else:
            row["spent_today"] = spent if (rec.created >= since or rec.is_open) else None
        if ledger is not None:
            workers = ledger.get("workers") or []
            row["workers"] = len(workers)
            row["threads"] = sum(int(w.get("nthreads") or 0) for w in workers)
            row["gpus"] = sum(int(w.get("gpus") or 0) for w in workers)
            row["gpu_model"] = next((w.get("gpu_model") for w in workers if w.get("gpu_model")), rec.gpu_model)
        row["live"] = ledger is not None
        row["sparkline"], row["top_cells"] = _usage_pictures(rec, ledger, spend)
        row["age"] = end - rec.created
        if rec.name in self._owned and rec.is_open:
            row["owned_by"] = "server"
        elif rec.owner_alive() is not None:
            row["owned_by"] = "kernel" if rec.owner_alive() else "gone"
        else:
            row["owned_by"] = "elsewhere"
        row["budget_used"] = (spent / rec.budget) if (spent is not None and rec.budget) else None
        #: an open row can always be stopped from the sidebar, whoever owns it and whatever its state
        row["stoppable"] = rec.is_open
        #: only the owner scales, and only where the provider can (its class flag): here, what this server launched
        row["scalable"] = rec.state == "running" and row["owned_by"] == "server" and _can_scale(rec.provider)
        row["may_bill"] = rec.may_bill
        #: the browser opens the dashboard at this server's route, unless the provider proxies it itself
        row["dashboard_proxied"] = bool(rec.dashboard) and not _proxies_dashboard(rec.provider)
        #: why the route could not reach it the last time (e.g. no SSH key the host takes), with what to do
        row["dashboard_problem"] = self.dashboard_problem(rec.id) if row["dashboard_proxied"] else None
        return row

    def _open(self, name: str) -> ClusterRecord:
        """The open cluster with this name (or id, as `cumulo ls` shows it)."""
        validate_name(name)
        rec = find(name, self.registry, open_only=True)
        if rec is None:
            raise ClusterNotFound(
                f"no open cluster named {name!r}; the Compute sidebar lists the open ones (`cumulo ls` in a terminal)"
            )
        return rec

    # -- launch --------------------------------------------------------------------------

    def validate(self, body: Any) -> ClusterSpec:
        """Check a launch request with the same code cumulo.connect uses (ClusterSpec)."""
        spec = ClusterSpec.from_dict(body)
        if spec.name is None:
            spec.name = f"{spec.provider}-{secrets.token_hex(2)}"
        if not provider_class(spec.provider).launchable_from_server:
            raise SpecError(
                f"provider {spec.provider!r} attaches to a scheduler someone else runs: "
                "connect to it from a notebook with cumulo.connect('tcp://host:port')"
            )
        if spec.address is not None and provider_for_address(spec.address) != spec.provider:
            # the address is the launch target (gateway://...): it must name the provider asked for
            raise SpecError(
                f"address {spec.address!r} is for provider {provider_for_address(spec.address)!r}, not "
                f"{spec.provider!r}: send the provider the address belongs to, or leave the address out"
            )
        if spec.address is not None:  # the server reaches it with its own credentials: the provider decides
            provider_class(spec.provider).check_server_target(spec.address)
        return spec

    def launch(self, body: Any) -> dict[str, Any]:
        """Validate ``body`` and start the cluster in the background; return its card at once.

        Raises SpecError (400) before anything starts when the request is invalid or
        the name is taken. The launch itself reports through :meth:`list`.
        """
        spec = self.validate(body)
        name = spec.name
        assert name is not None
        if spec.provider not in known_providers():
            raise SpecError(f"unknown provider {spec.provider!r}; known providers: {', '.join(known_providers())}")
        with self._lock:
            pending = self._launches.get(name)
            if (pending is not None and pending.state == "launching") or self.registry.find_open(name):
                raise SpecError(
                    f"a cluster named {name!r} is already open; pick another name or stop that one first"
                )
            launch = Launch(name=name, spec=spec.to_dict())
            self._launches[name] = launch
        launch.future = self._pool.submit(self._run_launch, launch, spec)
        return launch.as_row()

    def _run_launch(self, launch: Launch, spec: ClusterSpec) -> Any:
        fields = spec.to_dict()
        for key in ("name", "provider", "address"):
            fields.pop(key, None)
        # a provider launched on a target (gateway://host:port) gets it as connect()'s target, as in a notebook
        target = spec.address or spec.provider
        try:
            connect = self._connect or _default_connect()
            cluster = connect(target, name=launch.name, registry=self.registry, **fields)
        except CumuloError as exc:
            launch.state, launch.error, launch.message = "failed", str(exc), "launch failed"
            log.warning("cumulo: launch of %r failed: %s", launch.name, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - a launch thread must report, not vanish
            launch.state, launch.message = "failed", "launch failed"
            launch.error = f"{type(exc).__name__}: {exc}"
            log.exception("cumulo: launch of %r failed unexpectedly", launch.name)
            return None
        with self._lock:
            self._owned[launch.name] = cluster
            self._launches.pop(launch.name, None)
        log.info("cumulo: launched %r from JupyterLab (owned by the server, pid %s)", launch.name, os.getpid())
        return cluster

    def wait_launch(self, name: str, timeout: float | None = None) -> Any:
        """Block until a launch started here finishes (for tests and the CLI); the Cluster or None."""
        launch = self._launches.get(name)
        if launch is None or launch.future is None:
            return self._owned.get(name)
        return launch.future.result(timeout=timeout)

    # -- scale / stop --------------------------------------------------------------------

    def scale(self, name: str, body: Any) -> dict[str, Any]:
        """Ask a cluster this server owns for ``body['workers']`` workers."""
        if not isinstance(body, dict) or "workers" not in body:
            raise SpecError('scale needs a JSON body like {"workers": 4}')
        n = body["workers"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_WORKERS:
            raise SpecError(f"workers={n!r} must be a whole number between 0 and {MAX_WORKERS}")
        rec = self._open(name)
        cluster = self._owned.get(rec.name)
        if cluster is None:
            raise NotOwner(
                f"cluster {name!r} was started by another process ({rec.owner_host}, pid {rec.owner_pid}); "
                f"scale it there with cluster.scale({n}), or stop it here"
            )
        cluster.scale(n)
        return {"name": rec.name, "workers": n}

    def stop(self, name: str) -> dict[str, Any]:
        """Stop a cluster by name, whoever started it and whatever its open state; returns its final row.

        Blocking (a provider confirms termination before the row is closed): the
        handler runs it on a thread. A starting cluster whose owner is gone and a
        "stop failed: may still bill" one are stopped through their provider too.
        """
        with self._lock:
            launch = self._launches.get(name)
            if launch is not None and launch.state == "failed":
                del self._launches[name]
                return launch.as_row()
            if launch is not None:
                raise NotOwner(f"cluster {name!r} is still launching; stop it once its card shows it running")
        rec = self._open(name)
        # the last reading of the ledger, while the scheduler still answers: it becomes the final cost
        last = _spend(rec, self._read_ledgers([rec], samples=0).get(rec.id), time.time())
        cluster = self._owned.pop(rec.name, None)
        if cluster is not None and cluster.status == "running":
            cluster.close()
        else:
            _stop_elsewhere(rec, self.registry)
        Lifecycle(self.registry).record_cost(rec, last, last_reading=True)
        return self._row(self.registry.get(rec.id), now=time.time(), since=day_start())

    def close_owned(self) -> list[str]:
        """Stop every cluster this server launched (on server shutdown). Returns their names."""
        with self._lock:
            owned, self._owned = dict(self._owned), {}
        for name, cluster in owned.items():
            try:
                cluster.close()
            except CumuloError as exc:
                log.error("cumulo: could not stop %r on shutdown: %s; run `cumulo down %s`", name, exc, name)
        self._pool.shutdown(wait=False, cancel_futures=True)
        return list(owned)

    # -- prices / usage / reaper ---------------------------------------------------------

    def prices(self, *, gpu: str | None = None, provider: str | None = None) -> dict[str, Any]:
        """The GPU offers of the catalog as JSON rows (NaN as null), for the New cluster form."""
        from ..cost import catalog  # imported here: pandas and the snapshot load only when asked

        frame = catalog.prices(gpu=gpu, provider=provider)
        rows = []
        for rec in frame.to_dict(orient="records"):
            rows.append({str(k): _jsonable(v) for k, v in rec.items()})
        # providers the server can launch with (not those that attach to someone else's scheduler)
        launchable = [p for p in known_providers() if provider_class(p).launchable_from_server]
        return {"offers": rows, "providers": launchable}

    def gateway_options(self, address: str | None = None) -> dict[str, Any]:
        """The configured dask-gateway's cluster options as form fields, for the New cluster form.

        ``{"address", "fields": [{"name", "label", "kind", "default", "min", "max",
        "choices"}, ...], "rate_per_hour"}`` (see cumulo.providers.gateway.options.cluster_form);
        ``rate_per_hour`` is ``cumulo.gateway.rate-per-hour`` (None: no rate set), so the
        form's estimate says what a launch there costs. The server asks only the gateway of
        its own dask-gateway ``gateway.address`` config, with its own credentials
        (``gateway.auth.*``): ``address`` (gateway:// or gateway+https://, None for that one)
        may only name it again, since a request must never make the server send its
        credentials to a host the request chose (SpecError naming the configured one).
        Blocking (one request to the gateway): the handler runs it on a thread.
        """
        configured = check_same(address, what="reads cluster options only from") if address else server_gateway()
        form = cluster_form(configured)
        rate = config.get("gateway.rate-per-hour")
        form["rate_per_hour"] = None if rate is None else float(rate)
        return form

    def usage(self, name: str) -> dict[str, Any]:
        """What one cluster used and cost: its card, its event log, the ledger summary and where the spend
        went (``cells``: top cells, other cells, outside cells, idle; they add up to the spend).

        ``name``: a name or an id (as `cumulo ls` shows). An open cluster's figures are
        read from its scheduler; a closed one's are those kept in its row when it closed
        (``final``: True), None when none were kept (it closed before cumulo kept them).
        """
        rec = find(validate_name(name), self.registry)
        if rec is None:
            raise ClusterNotFound(f"no cluster named {name!r} (nor with that id) in the registry")
        ledger = self._read_ledgers([rec], samples=_sparkline_points()).get(rec.id) if rec.is_open else None
        now = time.time()
        row = self._row(rec, now=now, since=day_start(), ledger=ledger)
        events = [{"ts": ts, "kind": kind, "message": msg} for ts, kind, msg in self.registry.events(rec.id)]
        summary = cells = None
        if ledger is not None:
            spend = _spend(rec, ledger, now)
            summary = Usage.of_record(rec, self.registry).summary(ledger)
            cells = ranked(attribution(ledger, rec, spend=spend))
        elif not rec.is_open:
            kept = stored_usage(rec)
            if kept is not None:
                summary, cells = kept["summary"], kept["cells"]
        return {"cluster": row, "events": events, "usage": _jsonable(summary), "cells": _jsonable(cells),
                "final": not rec.is_open and summary is not None}

    def reap(self) -> list[Any]:
        """One sweep, as `cumulo reap` does: clusters nobody watches (expired leases, budgets, idle
        timeouts, dead owners of starting clusters, stop-failed retries) and provider orphans.

        Returns the clusters acted on and the orphans found, each with a ``text()``/``line()``.
        """
        if self._reap is not None:
            return list(self._reap(self.registry, dry_run=False) or [])
        done = sweep(self.registry, dry_run=False)
        for provider, why in done.unchecked.items():
            log.debug("cumulo reaper: %s orphans not checked: %s", provider, why)
        return [*done.clusters, *done.orphans]


def _default_connect() -> Callable[..., Any]:
    from .. import connect  # looked up when called: the server launches through whatever cumulo.connect is then

    return connect


def _spend(rec: ClusterRecord, ledger: dict[str, Any] | None, now: float) -> Any:
    """The Spend (amount, rate, basis) of a row, by the same rules the kernels' widgets use."""
    return spend_of(rec, ledger, now=now)


def _sparkline_points() -> int:
    """How many ledger samples a card's sparkline shows: ``cumulo.widgets.sparkline-points``, as the inline meter."""
    return max(int(config.get("widgets.sparkline-points") or 0), 0)


def _usage_pictures(
    rec: ClusterRecord, ledger: dict[str, Any] | None, spend: Any = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """A card's sparkline series and top cells, from the ledger just read, by the inline meter's own code.

    The cells end with "other cells", "outside cells" and "idle", so that their costs
    add up to ``spend`` (the card's own figure). (None, None) for a closed cluster or
    one whose scheduler did not answer: the card then shows no picture rather than an
    old or made-up one.
    """
    if ledger is None or not rec.is_open:
        return None, None
    series = usage_series(ledger.get("samples"), points=_sparkline_points())
    # the server runs no cells: every cell is named by its notebook (or the kernel that ran it)
    return series, rank_cells(top_cells(ledger, rec, mine=False, spend=spend))


def _can_scale(provider: str) -> bool:
    """Whether clusters of this provider can be scaled in place (its class flag; False when unknown here)."""
    try:
        return bool(provider_class(provider).can_scale)
    except CumuloError:
        return False


def _proxies_dashboard(provider: str) -> bool:
    """Whether this provider serves dashboards through a proxy of its own (its class flag; False when unknown)."""
    try:
        return bool(provider_class(provider).proxies_dashboard)
    except CumuloError:
        return False


def _read_ledgers(
    records: list[ClusterRecord], *, timeout: float = 2.0, samples: int = 0
) -> dict[str, dict[str, Any] | None]:
    """The ledgers of these clusters' schedulers, read concurrently; None for one that does not answer.

    ``samples``: how many of the ledger's recent samples each reading carries (for the cards' sparklines).
    """
    targets = [r for r in records if r.address]
    if not targets:
        return {}
    async def one(rec: ClusterRecord) -> dict[str, Any] | None:
        try:
            security = get_provider(rec.provider).security(rec)
        except CumuloError:
            return None
        return await fetch_ledger_async(rec.address or "", security, timeout=timeout, samples=samples)

    async def all_() -> list[dict[str, Any] | None]:
        return list(await asyncio.gather(*(one(r) for r in targets)))

    return {r.id: ledger for r, ledger in zip(targets, blocking(all_()))}


def _stop_elsewhere(rec: ClusterRecord, registry: Registry) -> None:
    """Stop a cluster another process started, through its provider, as `cumulo down` does."""
    registry.event(rec.id, "stop-requested", "stop requested from JupyterLab")
    blocking(stop_record(rec, registry, why=who("stopped from JupyterLab")))


def _jsonable(value: Any) -> Any:
    """Turn pandas/numpy scalars, timestamps, NaN and ±inf into plain JSON values (non-finite -> None).

    JSON has no NaN or Infinity: json.dumps would write them as bare words that the
    sidebar's JSON.parse rejects, so a number that is not finite is shown as unknown.
    """
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(data: Any) -> str:
    """The JSON text of a reply: the one place the server turns data into JSON.

    Values go through :func:`_jsonable` first (NaN and ±inf become null), and
    ``allow_nan=False`` makes any that still slipped through an error here rather
    than an ``Infinity`` that breaks the sidebar.
    """
    return json.dumps(_jsonable(data), allow_nan=False)
