"""Run a notebook cell's code on one worker of a cluster (the mechanism behind ``%%cumulo``).

:func:`run_cell` sends the code and the named inputs as one Dask task (on a GPU
worker when asked), runs it there in a fresh namespace, and brings the named
outputs back. While it runs, whatever the cell prints on the worker is sent as
worker events on one topic (``log_event``), relayed by the scheduler to this
client (``subscribe_topic``), and written here from the calling thread, so that
Jupyter shows it under the right cell as it happens. An exception in the cell
comes back as :class:`~cumulo.exceptions.RemoteError` carrying its traceback.

Captured: ``print`` and anything else writing to ``sys.stdout``/``sys.stderr``
from the cell's own thread. Not captured: threads the cell starts, and C code
writing to file descriptors 1/2 (those land in the worker's log).
"""

from __future__ import annotations

import io
import linecache
import queue
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import distributed
from dask.utils import parse_timedelta
from distributed import Client, Future

from . import _remote, config
from ._workers import probe_workers, resolve_client
from .exceptions import NoGPUWorkers, RemoteError, SpecError

__all__ = ["run_cell"]

TOPIC = "cumulo-remote-cell"
_FLUSH_BYTES = 4096
_FLUSH_SECONDS = 0.2
_SCATTER_BYTES = 1_000_000


# ---------------------------------------------------------------- worker side


class _ThreadRouter(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr in a worker: writes from a registered thread go
    to that thread's sink, everything else to the original stream (other tasks, logging)."""

    def __init__(self, original: TextIO) -> None:
        self.original = original
        self.sinks: dict[int, Any] = {}

    def write(self, s: str) -> int:
        sink = self.sinks.get(threading.get_ident())
        return (sink if sink is not None else self.original).write(s)

    def flush(self) -> None:
        sink = self.sinks.get(threading.get_ident())
        (sink if sink is not None else self.original).flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty, ...
        return getattr(self.original, name)


_ROUTER_LOCK = threading.Lock()


def _router(name: str) -> _ThreadRouter:
    with _ROUTER_LOCK:
        current = getattr(sys, name)
        if not isinstance(current, _ThreadRouter):
            current = _ThreadRouter(current)
            setattr(sys, name, current)
        return current


class _EventStream(io.TextIOBase):
    """A text stream that forwards what is written as worker events.

    Text goes out at most every ``_FLUSH_SECONDS`` (a timer on the worker's event
    loop sends what a quiet cell printed last, partial lines included), so a chatty
    loop costs a few events per second, not one per print.
    """

    def __init__(self, worker: Any, cell: str, stream: str) -> None:
        self.worker, self.cell, self.stream = worker, cell, stream
        self.lock = threading.Lock()
        self.buffer: list[str] = []
        self.size = 0
        self.last = 0.0
        self.timer_set = False

    def write(self, s: str) -> int:
        with self.lock:
            self.buffer.append(s)
            self.size += len(s)
        if self.size >= _FLUSH_BYTES or ("\n" in s and time.monotonic() - self.last >= _FLUSH_SECONDS):
            self.flush()
        elif s and not self.timer_set:  # a partial line (a \r progress bar) or lines printed fast
            self.timer_set = True
            self.worker.loop.add_callback(self._arm)
        return len(s)

    def _arm(self) -> None:  # on the worker's event loop
        self.worker.loop.call_later(_FLUSH_SECONDS, self._timed_flush)

    def _timed_flush(self) -> None:
        self.timer_set = False
        self.flush()

    def flush(self) -> None:
        with self.lock:
            text = "".join(self.buffer)
            self.buffer, self.size = [], 0
            self.last = time.monotonic()
        if text:
            self.worker.log_event(TOPIC, {"cell": self.cell, "stream": self.stream, "text": text})


def _execute(
    code: str, filename: str, cell: str, inputs: dict[str, Any], outputs: list[str]
) -> dict[str, Any]:
    """Run on the worker: exec the cell with its inputs, stream its output, return its outputs."""
    import cloudpickle
    from distributed import get_worker

    worker = get_worker()
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    me = threading.get_ident()
    streams = {name: _EventStream(worker, cell, name) for name in ("stdout", "stderr")}
    routers = {name: _router(name) for name in streams}
    for name, router in routers.items():
        router.sinks[me] = streams[name]
    try:
        namespace: dict[str, Any] = {"__name__": "__cumulo_cell__", **inputs}
        try:
            exec(compile(code, filename, "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 - the cell's error goes back to the notebook
            return {"ok": False, "error": _remote.capture(exc, skip=1), "worker": worker.address}
        missing = [name for name in outputs if name not in namespace]
        if missing:
            return {
                "ok": False,
                "error": {"type": "NameError", "message": f"the cell did not define {missing}", "frames": []},
                "worker": worker.address,
            }
        result = {name: namespace[name] for name in outputs}
        for name, value in result.items():
            try:
                cloudpickle.dumps(value)
            except Exception as exc:  # noqa: BLE001
                return {
                    "ok": False,
                    "error": {
                        "type": "PicklingError",
                        "message": f"output {name!r} ({type(value).__name__}) cannot be sent back: {exc}",
                        "frames": [],
                    },
                    "worker": worker.address,
                }
        return {"ok": True, "outputs": result, "worker": worker.address}
    finally:
        for name, router in routers.items():
            router.sinks.pop(me, None)
            streams[name].flush()
        worker.log_event(TOPIC, {"cell": cell, "eof": True})
        linecache.cache.pop(filename, None)


# ---------------------------------------------------------------- client side


class _Relay:
    """One subscription per client to the cell-output topic, fanned out to running cells."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cells: dict[str, queue.Queue[dict[str, Any]]] = {}

    def handler(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        q = self.cells.get(str(msg.get("cell"))) if isinstance(msg, dict) else None
        if q is not None:
            q.put(msg)

    def open(self, client: Client, cell: str) -> queue.Queue[dict[str, Any]]:
        with self.lock:
            q: queue.Queue[dict[str, Any]] = queue.Queue()
            self.cells[cell] = q
            client.subscribe_topic(TOPIC, self.handler)
            return q

    def close(self, client: Client, cell: str) -> None:
        with self.lock:
            self.cells.pop(cell, None)
            if not self.cells and client.status == "running":
                client.unsubscribe_topic(TOPIC)


_RELAY = _Relay()


def _gpu_workers(client: Client) -> list[str]:
    infos = probe_workers(client)
    gpu = [i.address for i in infos if i.gpus > 0]
    if not gpu:
        raise NoGPUWorkers(
            f"--gpu asked for a worker with a GPU, but none of the cluster's {len(infos)} worker(s) "
            "sees one (NVML). Attach a GPU cluster with cumulo.connect(...), or drop --gpu."
        )
    return gpu


def run_cell(
    code: str,
    cluster: Any = None,
    *,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] = (),
    gpu: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> dict[str, Any]:
    """Run ``code`` on one worker of ``cluster`` and return the values of ``outputs``.

    ``inputs`` become the cell's globals on the worker. With ``gpu=True`` the task may
    only run on a worker that sees a GPU (NoGPUWorkers if there is none); otherwise
    Dask picks the worker. The cell's stdout/stderr are written to ``stdout``/``stderr``
    (default: this process's) while it runs. Raises RemoteError with the cell's
    traceback if it fails, or if an output is missing or cannot be sent back.
    """
    for name in outputs:
        if not name.isidentifier():
            raise SpecError(f"output name {name!r} is not a Python identifier.")
    client = resolve_client(cluster)
    where = _gpu_workers(client) if gpu else None
    cell = uuid.uuid4().hex[:12]
    filename = f"<cumulo-cell-{cell}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    grace = float(parse_timedelta(config.get("remote-cell.output-timeout", "2s"), "s"))
    sent = _ship_inputs(client, dict(inputs or {}), where)
    q = _RELAY.open(client, cell)
    try:
        future = client.submit(
            _execute, code, filename, cell, sent, list(outputs),
            key=f"cumulo-cell-{cell}", workers=where, allow_other_workers=False, pure=False,
        )
        try:
            _pump(q, future, stdout, stderr, grace)
        except KeyboardInterrupt:
            future.cancel()
            raise
        outcome = _outcome(future)
    finally:
        _RELAY.close(client, cell)
    if not outcome["ok"]:
        text = _remote.render(outcome["error"])
        linecache.cache.pop(filename, None)
        raise RemoteError(
            f"the cell raised {outcome['error'].get('type')} on worker {outcome.get('worker')}: "
            f"{outcome['error'].get('message')}\n\nRemote traceback:\n{text}",
            remote_traceback=text,
            remote_type=str(outcome["error"].get("type")),
            worker=outcome.get("worker"),
        )
    linecache.cache.pop(filename, None)
    return dict(outcome["outputs"])


def _ship_inputs(client: Client, inputs: dict[str, Any], where: list[str] | None) -> dict[str, Any]:
    """Large inputs travel as scattered data (dask resolves the futures on the worker), not inside the task."""
    from dask.sizeof import sizeof

    return {
        name: client.scatter(value, workers=where, hash=False) if sizeof(value) > _SCATTER_BYTES else value
        for name, value in inputs.items()
    }


def _pump(
    q: queue.Queue[dict[str, Any]], future: Future, stdout: TextIO | None, stderr: TextIO | None, grace: float
) -> None:
    """Write streamed output from this thread until the cell is done and its last lines are in."""
    deadline: float | None = None
    while True:
        if deadline is None and future.done():
            if future.status != "finished":
                return  # failed before the cell ran (e.g. inputs that do not unpickle): no output follows
            deadline = time.monotonic() + grace
        if deadline is not None and time.monotonic() > deadline:
            return
        try:
            msg = q.get(timeout=0.05)
        except queue.Empty:
            continue
        if msg.get("eof"):
            return
        out = (stderr or sys.stderr) if msg.get("stream") == "stderr" else (stdout or sys.stdout)
        out.write(msg.get("text", ""))
        out.flush()


def _outcome(future: Future) -> dict[str, Any]:
    distributed.wait([future])
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        return {"ok": False, "error": _remote.capture(future.exception()), "worker": None}
    return {"ok": False, "error": {"type": "Cancelled", "message": f"the cell's task was {future.status}", "frames": []}}
