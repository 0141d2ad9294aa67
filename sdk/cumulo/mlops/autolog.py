"""``cumulo.mlflow.autolog()``: each MLflow run gets the cluster it ran on, what each cell cost, and its totals.

While an MLflow run is active in the kernel:

- params, when a cluster is attached during the run, or when the run starts with a
  cluster already attached: ``cumulo.provider``, ``.region``, ``.gpu``,
  ``.instance_type``, ``.workers``, ``.market``, ``.price_per_hour``, ``.cluster`` and
  the cumulo/dask/distributed versions (:func:`cumulo.mlops.figures.params_of`);
- after each cell that used a cluster (with ``%load_ext cumulo``): ``cumulo.cell.cost_usd``,
  ``.task_seconds``, ``.gpu_seconds`` and, where the GPUs measured it, ``.energy_wh``, at
  step = the cell's execution count;
- when the run ends or the cluster closes, whichever comes first: ``cumulo.cost_usd``,
  ``cumulo.busy_fraction``, and where energy was measured ``cumulo.energy_wh`` and
  ``cumulo.co2_g`` with the grid intensity and its source as params; the usage report
  (HTML) and plot (PNG) as artifacts under ``cumulo/``. The figures are the run's share:
  what the clusters used between the run's start (or their attach) and its end.

How it hears of runs: :mod:`cumulo.mlops.runhooks` wraps ``mlflow.start_run`` and
``mlflow.end_run``; a run started before autolog is noticed at the next cell. Cells, attach and close come from
cumulo.cost.listeners. Everything is sent through an :class:`~cumulo.mlops.outbox.Outbox`,
so a cell never waits for the tracking server and never fails because of it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

from .. import attached as attached_clusters
from .. import config
from ..cost import listeners
from ..cost.carbon import Intensity, co2_grams, intensity
from ..cost.cellcost import current_cell
from ..cost.cellhistory import kernel_id
from ..cost.metering import attribution, fetch_ledger, ranked, rates
from ..exceptions import MissingDependency
from . import artifacts, figures
from .outbox import Outbox
from .runhooks import active_run_id, wrap_runs
from .tracker import Tracker

__all__ = ["Autolog", "autolog", "current"]

logger = logging.getLogger("cumulo")

_INSTALL = "pip install 'cumulo[mlflow]'"


@dataclass
class _Share:
    """One cluster followed by one run: its summary when the run began following it, and the run's share."""

    cluster: weakref.ref[Any]
    name: str
    grid: Intensity
    base: dict[str, Any] | None = None
    #: the run's share, fixed once the cluster closed
    final: dict[str, Any] | None = None
    kept: dict[str, Any] | None = None


@dataclass
class _Run:
    run_id: str
    uri: str
    shares: dict[int, _Share] = field(default_factory=dict)
    params_logged: bool = False
    #: the cell the run ended in (its last cell's figures still go to it)
    ended_in: str | None = None
    ended: bool = False
    #: the shares whose totals were logged (ids), so that a run end after a close logs nothing twice
    totals_of: frozenset[int] = frozenset()
    trainings: int = 0


class Autolog:
    """The listener: follows MLflow runs and the clusters they use, and queues what to log."""

    def __init__(self, outbox: Outbox | None = None, tracker: Tracker | None = None) -> None:
        self.outbox = outbox or Outbox(limit=int(config.get("mlflow.queue-limit", 10000)),
                                       retry_interval=config.duration_seconds(config.get("mlflow.retry-interval",
                                                                                         "10s")))
        self.tracker = tracker or Tracker()
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._undo: Any = lambda: None

    # -- MLflow's side ---------------------------------------------------------------------------------------

    def patch(self, mlflow: Any) -> None:
        """Hear of MLflow's runs (cumulo.mlops.runhooks)."""
        self._undo = wrap_runs(mlflow, self.started, self.ending)

    def unpatch(self) -> None:
        self._undo()

    def _active(self) -> str | None:
        return active_run_id()

    def _run(self, run_id: str) -> tuple[_Run, bool]:
        """The state of ``run_id``, made on first sight (True: new)."""
        with self._lock:
            if run_id in self._runs:
                return self._runs[run_id], False
            import mlflow  # optional extra: mlflow (already imported by autolog())

            run = _Run(run_id, mlflow.get_tracking_uri())
            self._runs[run_id] = run
            while len(self._runs) > 1000:  # bounded: the oldest finished runs go
                oldest = next((k for k, r in self._runs.items() if r.ended), None)
                if oldest is None:
                    break
                del self._runs[oldest]
            return run, True

    def started(self, run_id: str) -> None:
        """A run started in this thread: follow every cluster attached now, from now."""
        run, _ = self._run(run_id)
        for cluster in self._live():
            self._follow(run, cluster, base=_summary_now(cluster))

    def ending(self, run_id: str) -> None:
        """A run ends (called in its thread, before MLflow marks it ended): log its totals and artifacts."""
        run, new = self._run(run_id)
        if new:
            for cluster in self._live():
                self._follow(run, cluster, base=None)
        run.ended = True
        run.ended_in = current_cell()
        self._totals(run, live=True)

    # -- cumulo's side (cumulo.cost.listeners) -------------------------------------------------------------

    def attached(self, cluster: Any) -> None:
        """A cluster runs: every open run follows it from now (its usage so far is read on its loop)."""
        with self._lock:
            runs = [r for r in self._runs.values() if not r.ended]
        if not runs:
            return
        shares = [self._follow(run, cluster, base=None) for run in runs]
        client = getattr(cluster, "client", None)
        if client is None:
            return
        import asyncio

        async def read_base() -> None:
            try:
                ledger = await asyncio.wait_for(client.scheduler.cumulo_ledger(), 10)
                base = cluster.usage.summary(ledger)
            except Exception:  # counted from the ledger's start: for a new cluster the same
                return
            for share in shares:
                if share is not None and share.base is None:
                    share.base = base

        try:
            asyncio.get_running_loop().create_task(read_base())
        except RuntimeError:  # not on a loop: counted from the ledger's start
            pass

    def cell(self, cluster: Any, tag: str, count: int | None, row: dict[str, Any], spend: Any) -> None:
        """A cell used ``cluster``: its metrics go to the active run, and to a run that ended in this cell."""
        targets: list[_Run] = []
        active = self._active()
        if active is not None:
            run, new = self._run(active)
            if new:
                self._follow(run, cluster, base=None)
            targets.append(run)
        with self._lock:
            targets += [r for r in self._runs.values() if r.ended and r.ended_in == tag and r not in targets]
        if not targets:
            return
        metrics = figures.cell_metrics(row, getattr(spend, "amount", None))
        step = int(count) if count is not None else 0
        for run in targets:
            if id(cluster) not in run.shares and not run.ended:
                self._follow(run, cluster, base=None)
            self.outbox.put(self.tracker.batch(run.uri, run.run_id, metrics=metrics, step=step))

    def closing(self, cluster: Any, kept: dict[str, Any]) -> None:
        """A cluster closes (on its loop): fix each run's share of it; a run whose clusters all closed gets
        its totals now (the cluster closed before the run ended)."""
        with self._lock:
            runs = [r for r in self._runs.values() if id(cluster) in r.shares]
        for run in runs:
            share = run.shares[id(cluster)]
            if share.final is None:
                share.final = figures.delta(kept.get("summary") or {}, share.base)
                share.kept = kept
            if not run.ended and all(s.final is not None for s in run.shares.values()):
                self._totals(run, live=False)

    def work_started(self, name: str, cluster: Any) -> dict[str, Any] | None:
        """Before a training call: remember where the cluster stood (and open a nested run if asked)."""
        active = self._active()
        found = _cluster_of(cluster)
        if active is None or found is None:
            return None
        nested = None
        if config.get("mlflow.nested-training-runs"):
            import mlflow  # optional extra: mlflow (already imported by autolog())

            nested = mlflow.start_run(nested=True, run_name=f"cumulo {name}").info.run_id
        run, _ = self._run(nested or active)
        run.trainings += 1
        return {"name": name, "cluster": weakref.ref(found), "base": _summary_now(found), "run": run,
                "nested": nested, "step": run.trainings - 1}

    def work_ended(self, token: dict[str, Any] | None, ok: bool) -> None:
        """After a training call: its cost, energy and CO2 go to the run (and the nested run ends)."""
        if token is None:
            return
        cluster = token["cluster"]()
        run: _Run = token["run"]
        if cluster is not None and cluster.status == "running":
            share = figures.delta(_summary_now(cluster) or {}, token["base"])
            grid = _grid(cluster)
            metrics = {k.replace("cumulo.", "cumulo.train.", 1): v
                       for k, v in figures.total_metrics([(share, grid)]).items()}
            metrics["cumulo.train.task_seconds"] = float(share.get("task_seconds") or 0.0)
            self.outbox.put(self.tracker.batch(run.uri, run.run_id, metrics=metrics, step=token["step"],
                                               params={"cumulo.train.kind": token["name"]}
                                               if token["nested"] else None))
        if token["nested"]:
            import mlflow  # optional extra: mlflow (already imported by autolog())

            if self._active() == token["nested"]:
                mlflow.end_run("FINISHED" if ok else "FAILED")

    # -- what is logged ------------------------------------------------------------------------------------

    def _live(self) -> list[Any]:
        return [c for c in list(attached_clusters.live)
                if c.status == "running" and getattr(getattr(c, "usage", None), "installed", False)]

    def _follow(self, run: _Run, cluster: Any, *, base: dict[str, Any] | None) -> _Share | None:
        """``run`` follows ``cluster`` from ``base``; the first cluster of a run gives it its params."""
        with self._lock:
            if id(cluster) in run.shares:
                return run.shares[id(cluster)]
            share = _Share(weakref.ref(cluster), str(getattr(cluster, "name", "cluster")), _grid(cluster), base)
            run.shares[id(cluster)] = share
            first = not run.params_logged
            run.params_logged = True
        if first:
            try:
                record = cluster.usage.record()
            except Exception:
                record = getattr(cluster, "record", None)
            self.outbox.put(self.tracker.batch(run.uri, run.run_id, params=figures.params_of(cluster, record,
                                                                                            *rates())))
        return share

    def _totals(self, run: _Run, *, live: bool) -> None:
        """Log ``run``'s totals over its shares (reading live clusters now when ``live``) and the reports."""
        pairs: list[tuple[dict[str, Any], Intensity]] = []
        reports: list[tuple[str, dict[str, Any], Intensity, dict[str, Any]]] = []
        with self._lock:
            shares = dict(run.shares)
        finals = frozenset(k for k, s in shares.items() if s.final is not None)
        if not shares or (len(finals) == len(shares) and finals == run.totals_of):
            return  # nothing new since the totals were logged (the clusters closed before the run ended)
        for share in shares.values():
            if share.final is not None:
                pairs.append((share.final, share.grid))
                if share.kept is not None:
                    reports.append((share.name, share.kept, share.grid, share.final))
                continue
            cluster = share.cluster()
            if not live or cluster is None or cluster.status != "running":
                continue
            kept = _kept_now(cluster)
            if kept is None:
                continue
            mine = figures.delta(kept["summary"], share.base)
            pairs.append((mine, share.grid))
            reports.append((share.name, kept, share.grid, mine))
        run.totals_of = finals
        if not pairs:
            return
        params: dict[str, str] = {}
        measured = [grid for s, grid in pairs if s.get("energy_wh") is not None]
        if measured:
            params = {"cumulo.carbon_intensity_g_per_kwh": f"{measured[0].g_per_kwh:g}",
                      "cumulo.carbon_intensity_source": (measured[0].source + (f" ({measured[0].date})"
                                                                                if measured[0].date else ""))[:500]}
        self.outbox.put(self.tracker.batch(run.uri, run.run_id, metrics=figures.total_metrics(pairs), params=params))
        for name, kept, grid, mine in reports:
            co2 = co2_grams(kept.get("summary", {}).get("energy_wh"), grid)
            self.outbox.put(self.tracker.artifacts(
                run.uri, run.run_id, lambda d, n=name, k=kept, c=co2: _draw(d, n, k, c)))


def _draw(directory: Any, name: str, kept: dict[str, Any], co2: float | None) -> None:
    artifacts.write(directory, name, kept, co2_g=co2)


def _grid(cluster: Any) -> Intensity:
    spec = getattr(cluster, "spec", None)
    return intensity(getattr(cluster, "provider", None), getattr(spec, "region", None))


def _summary_now(cluster: Any) -> dict[str, Any] | None:
    """The cluster's usage summary read now (from the caller's thread); None if it does not answer."""
    try:
        return cluster.usage.summary()
    except Exception:
        return None


def _kept_now(cluster: Any) -> dict[str, Any] | None:
    """What a closing cluster keeps (summary and where the spend went), read now from a running one."""
    try:
        ledger = fetch_ledger(cluster.client, kernel=kernel_id(), timeout=5.0)
        usage = cluster.usage
        usage.absorb(ledger)
        record = usage.record()
        summary = usage.summary(ledger)
        return {"summary": summary, "cells": ranked(attribution(ledger, record, me=kernel_id()))}
    except Exception:
        return None


def _cluster_of(target: Any) -> Any:
    """The attached cumulo cluster behind a training call's ``cluster`` argument (a Cluster, a Client, None)."""
    if target is not None and hasattr(target, "usage") and hasattr(target, "status"):
        return target
    live = [c for c in list(attached_clusters.live) if c.status == "running"]
    if target is None:
        current = attached_clusters.current_or_none()
        return current if current in live else None
    return next((c for c in live if c.client is target), None)


_state: list[Autolog] = []


def current() -> Autolog | None:
    """The autologger of this process, while autolog is on."""
    return _state[0] if _state else None


def autolog(disable: bool = False, *, quiet: bool = False) -> Autolog | None:
    """Log each cluster's params, each cell's cost and each run's totals to the active MLflow run.

    ``disable=True`` turns it off (what is queued is sent first, for up to 5 s). Needs the
    MLflow client (``pip install 'cumulo[mlflow]'``): MissingDependency otherwise, or, with
    ``quiet`` (``cumulo.mlflow.autolog: true`` in config), one warning and nothing else.
    """
    if disable:
        if _state:
            log = _state.pop()
            listeners.unsubscribe(log)
            log.unpatch()
            log.outbox.close()
        return None
    if _state:
        return _state[0]
    try:
        import mlflow  # optional extra: mlflow
        import mlflow.tracking.fluent  # noqa: F401
    except ImportError as exc:
        message = (f"cumulo.mlflow.autolog needs the MLflow client, which is not installed: {_INSTALL} "
                   "(or pip install mlflow-skinny)")
        if quiet:
            warnings.warn(message, stacklevel=2)
            return None
        raise MissingDependency(message) from exc
    log = Autolog()
    log.patch(mlflow)
    if not _state_ever:
        # after MLflow's own atexit (which ends an open run without telling anyone): at exit ours runs first
        atexit.register(_at_exit)
        _state_ever.append(True)
    _state.append(log)
    listeners.subscribe(log)
    active = log._active()
    if active is not None:
        log.started(active)
    return log


_state_ever: list[bool] = []


def _at_exit() -> None:
    """At exit: a run still open gets its totals, and what is queued is sent (for up to 10 s)."""
    if not _state:
        return
    log = _state[0]
    try:
        active = log._active()
        if active is not None:
            log.ending(active)
    except Exception:
        logger.debug("cumulo: the totals of the open MLflow run could not be logged at exit", exc_info=True)
    log.outbox.close(timeout=10.0)
