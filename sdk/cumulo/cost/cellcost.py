"""Charge each notebook cell for the work it submitted, and one quiet line after cells that did.

IPython ``pre_run_cell`` / ``post_run_cell`` hooks, registered by ``%load_ext
cumulo`` or on connect (``cumulo.widgets.cell-line-on-connect``).

Attribution. Every graph a cell submits (``compute``, ``persist``, ``submit``,
``map``, ``dask.compute`` through the default client: they all go through
``Client._graph_to_futures``) is sent under ``dask.annotate(cumulo_cell=TAG)``,
``TAG`` = ``"<kernel>/<n>"``, so every task of it carries the cell on the
scheduler, where the ledger (:mod:`cumulo._ledger`) adds up its task-seconds,
GPU-seconds, energy and task counts *whenever* they finish: work submitted in
one cell and awaited in another is charged to the cell that submitted it.

The annotation is applied at submission only, not for the whole cell: dask's
legacy graph layers copy the annotations in force when they are *built*, so a
cell-wide annotation would charge the cell that built a collection rather than
the one that computed it, stop dask from fusing layers built in different
cells, and make dask-dataframe warn about annotations it ignores. The current
cell lives in a context variable: a thread started by a cell (or a script with
no cell at all) submits untagged work, which the ledger counts under
"outside cells".

The line. A cell that submitted nothing prints nothing and costs a few
microseconds (no message, no round trip). After a cell that did, a
``cumulo-cell-mark`` goes on the client's batched stream (behind the cell's
graphs) and one RPC, answered once that mark has arrived, returns the cell's
figures; work still running is reported as such ("… 8 tasks still running"),
without waiting for it.
"""

from __future__ import annotations

import contextvars
import functools
import html
import itertools
import sys
import time
import weakref
from typing import Any

from .. import config
from .._ledger import CELL_ANNOTATION
from . import cellhistory, listeners
from .metering import cell_spend, fetch_cell

__all__ = ["current_cell", "loaded", "register", "track", "tracked", "unregister"]

#: Clusters followed by the hooks (weak references: a list is cheaper to walk than a WeakSet, per cell).
_tracked: list[weakref.ref[Any]] = []
_registered: weakref.WeakSet[Any] = weakref.WeakSet()
_counter = itertools.count(1)
#: The tag of the cell running in this context (None outside cells, and in threads a cell starts).
_CELL: contextvars.ContextVar[str | None] = contextvars.ContextVar("cumulo_cell", default=None)
#: Clients that submitted a graph during the current cell (weak references).
_submitted: list[weakref.ref[Any]] = []
_running: dict[str, Any] = {}
_reported: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def current_cell() -> str | None:
    """The tag of the notebook cell running in this context, or None (outside cells, or in a thread)."""
    return _CELL.get()


def track(cluster: Any) -> None:
    """Follow ``cluster`` in per-cell lines; registers the IPython hooks if running in IPython."""
    _tracked[:] = [r for r in _tracked if r() is not None and r() is not cluster]
    _tracked.append(weakref.ref(cluster))
    if "IPython" not in sys.modules:
        return  # no shell can be running (a script, `cumulo run`): importing IPython to ask costs some 45 ms
    from IPython import get_ipython

    ip = get_ipython()
    if ip is not None:
        register(ip)


def tracked() -> list[Any]:
    """Clusters followed by the per-cell hooks in this process."""
    return [c for c in (r() for r in _tracked) if c is not None]


def loaded() -> bool:
    """Whether the hooks are registered in an IPython shell of this process (%load_ext cumulo)."""
    return len(_registered) > 0


def register(ip: Any) -> None:
    """Add the hooks to an IPython shell and tag graphs submitted from its cells (idempotent)."""
    if ip in _registered:
        return
    cellhistory.limit(int(config.get("cost.max-cells", 10000)))
    _install_tagging()
    ip.events.register("pre_run_cell", _pre_run_cell)
    ip.events.register("post_run_cell", _post_run_cell)
    _registered.add(ip)


def unregister(ip: Any) -> None:
    """Remove the hooks from an IPython shell (graphs are no longer tagged once no shell has them)."""
    for name, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        try:
            ip.events.unregister(name, fn)
        except ValueError:
            pass
    _registered.discard(ip)
    _CELL.set(None)


def _install_tagging() -> None:
    """Wrap ``Client._graph_to_futures`` (the one door of submit, map, compute, persist and get) once."""
    from distributed import Client

    original = Client._graph_to_futures
    if getattr(original, "__cumulo_tagging__", False):
        return

    @functools.wraps(original)
    def _graph_to_futures(self: Any, *args: Any, **kwargs: Any) -> Any:
        tag = _CELL.get()
        if tag is None:
            return original(self, *args, **kwargs)
        import dask

        if not any(r() is self for r in _submitted):
            _submitted.append(weakref.ref(self))
        with dask.annotate(**{CELL_ANNOTATION: tag}):
            return original(self, *args, **kwargs)

    _graph_to_futures.__cumulo_tagging__ = True  # type: ignore[attr-defined]
    Client._graph_to_futures = _graph_to_futures  # type: ignore[method-assign]


def _pre_run_cell(info: Any = None) -> None:
    tag = f"{cellhistory.kernel_id()}/{next(_counter)}"
    _submitted.clear()
    _running.clear()
    _running.update(tag=tag, t0=time.perf_counter(), start=time.time(), source=getattr(info, "raw_cell", None))
    _CELL.set(tag)


def _post_run_cell(result: Any = None) -> None:
    _CELL.set(None)
    if not _running:
        _report_guards()
        return
    wall = time.perf_counter() - _running["t0"]
    tag, start, source = _running["tag"], _running["start"], _running.get("source")
    end = time.time()
    _running.clear()
    count = getattr(result, "execution_count", None)
    names = {"notebook": cellhistory.notebook(), "first_line": cellhistory.first_line(source)}
    cellhistory.remember(tag, count, start, end, wall, **names)
    if _submitted:  # the common case (a cell that submitted nothing) stops here
        clients = [c for c in (r() for r in _submitted) if c is not None]
        _submitted.clear()
        for cluster in tracked():
            _after_cell(cluster, clients, tag, count, start, end, wall, names)
    _report_guards()


def _ours(cluster: Any, client: Any) -> bool:
    """Whether ``client`` talks to the scheduler ``cluster``'s ledger was installed on."""
    usage = getattr(cluster, "usage", None)
    ident = getattr(client, "_scheduler_identity", None) or {}
    return usage is not None and usage.scheduler_id is not None and ident.get("id") == usage.scheduler_id


def _after_cell(cluster: Any, clients: list[Any], tag: str, count: int | None, start: float, end: float,
                wall: float, names: dict[str, str | None]) -> None:
    client = getattr(cluster, "client", None)
    usage = getattr(cluster, "usage", None)
    if cluster.status != "running" or client is None or usage is None or not usage.installed:
        return
    mine = [c for c in clients if _ours(cluster, c)]
    if not mine:
        return
    # the cell's name (notebook, execution count, first line) travels with its mark, so every view names it alike
    mark = {"op": "cumulo-cell-mark", "mark": tag, "start": start, "end": end, "execution_count": count, **names}
    for c in mine:  # behind the cell's graphs on each stream they went out on
        try:
            c._send_to_scheduler(dict(mark))
        except Exception:
            continue
    try:
        row = fetch_cell(client, tag, wait=2.0, timeout=5.0)
    except Exception:  # never let the line break a cell
        return
    if not row or not row.get("submitted"):
        return
    usage.record_cell(row)
    if config.get("widgets.cell-line") or listeners.active():
        try:
            rec = usage.record()
        except Exception:
            rec = None
        spend = cell_spend(row, rec, int(row.get("workers") or 1))
        listeners.cell(cluster, tag, count, row, spend)  # trackers (cumulo.mlops); nothing when none listens
        if config.get("widgets.cell-line"):
            _show(line(cluster.name, row, wall, spend))


def line(name: str, row: dict[str, Any], wall: float, spend: Any) -> str:
    """The per-cell line: wall time, task-seconds on finished tasks, GPU, energy, cost, what still runs."""
    parts = [f"cumulo {name}: {wall:.2f}s wall"]
    ended = int(row.get("finished") or 0) + int(row.get("erred") or 0)
    running = int(row.get("running") or 0)
    if ended:
        parts.append(f"{row.get('task_seconds') or 0.0:.1f} task-s on {ended} tasks")
    else:
        parts.append(f"{row.get('submitted', 0)} tasks submitted")
    if row.get("erred"):
        parts.append(f"{row['erred']} failed")
    if row.get("gpu_seconds"):
        parts.append(f"{row['gpu_seconds']:.1f} GPU-s busy")
    if row.get("energy_j"):
        parts.append(f"{row['energy_j'] / 3600.0:.3f} Wh GPU energy")
    if ended:
        parts.append("no rate set" if spend.amount is None else f"~${spend.amount:.4f} (estimate)")
    text = " · ".join(parts)
    if running:
        text += f" … {running} tasks still running"
    return text


def _show(text: str) -> None:
    try:
        from IPython.display import display

        display({"text/plain": text,
                 "text/html": f"<div style='color:#888;font-size:85%;font-family:monospace'>{html.escape(text)}</div>"},
                raw=True)
    except ImportError:
        print(text)


def _report_guards() -> None:
    for ref in _tracked:
        cluster = ref()
        dog = getattr(cluster, "watchdog", None)
        if dog is None:
            continue
        tripped = getattr(dog, "tripped", None)
        if tripped is not None and _reported.get(cluster) != id(tripped):
            _reported[cluster] = id(tripped)
            _show(f"cumulo: {tripped}")
