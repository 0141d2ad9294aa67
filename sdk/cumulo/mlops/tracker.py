"""Sending to an MLflow tracking server: params, metrics and artifacts of one run, as outbox items.

One ``MlflowClient`` per tracking URI (a run is logged to the server it was started on,
even if the notebook points MLflow elsewhere later). Before a send to an ``http(s)``
server, one short ``GET /health`` (2 s) tells "the server is away" (keep the values:
:class:`~cumulo.mlops.outbox.Unreachable`) from "the server refused this" without
waiting through MLflow's own retries, which take minutes to give up on a stopped server.
Other stores (a local directory, a database URI) are written directly.

Nothing sent names a secret: params are the cluster's shape and price, never its
address or credentials, and a failure is described without the URI.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .outbox import Item, Unreachable, describe

__all__ = ["Tracker"]

_PROBE_TIMEOUT_S = 2.0
#: MLflow's limits for one log_batch request
_MAX_METRICS, _MAX_PARAMS = 1000, 100


class Tracker:
    """Makes outbox items that log to MLflow runs."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, uri: str) -> Any:
        """The MlflowClient for ``uri`` (made once)."""
        with self._lock:
            if uri not in self._clients:
                from mlflow.tracking import MlflowClient  # optional extra: mlflow

                self._clients[uri] = MlflowClient(tracking_uri=uri)
            return self._clients[uri]

    def probe(self, uri: str) -> None:
        """Raise Unreachable when an http(s) tracking server does not answer at all."""
        if not uri.startswith(("http://", "https://")):
            return
        import httpx

        try:
            httpx.get(uri.rstrip("/") + "/health", timeout=_PROBE_TIMEOUT_S)
        except httpx.TransportError as exc:  # any HTTP answer, even 401, means it is there
            raise Unreachable(describe(exc)) from None

    def _item(self, what: str, uri: str, send: Callable[[Any], None],
              discard: Callable[[], None] | None = None) -> Item:
        def run() -> None:
            self.probe(uri)
            send(self.client(uri))

        return Item(what, run, discard)

    def batch(self, uri: str, run_id: str, *, metrics: dict[str, float] | None = None, step: int = 0,
              params: dict[str, str] | None = None) -> Item:
        """Log ``metrics`` (at ``step``, timestamped now) and ``params`` to run ``run_id`` in one request; items
        of the same run that wait together are merged into one request (within MLflow's limits)."""
        from mlflow.entities import Metric, Param  # optional extra: mlflow

        stamp = int(time.time() * 1000)
        held: dict[str, Any] = {"metrics": [Metric(k, float(v), stamp, int(step)) for k, v in (metrics or {}).items()],
                                "params": dict(params or {})}
        names = ", ".join([*(params or {}), *(metrics or {})][:3])

        def send(c: Any) -> None:
            c.log_batch(run_id, metrics=held["metrics"], params=[Param(k, v) for k, v in held["params"].items()],
                        synchronous=True)

        item = self._item(f"{names} of run {run_id}", uri, send)

        def merge(other: Item) -> bool:
            theirs = other.payload
            if theirs is None or theirs["key"] != (uri, run_id):
                return False
            if len(held["metrics"]) + len(theirs["metrics"]) > _MAX_METRICS or \
                    len(held["params"]) + len(theirs["params"]) > _MAX_PARAMS or \
                    any(held["params"].get(k, v) != v for k, v in theirs["params"].items()):
                return False
            held["metrics"] += theirs["metrics"]
            held["params"].update(theirs["params"])
            return True

        item.merge = merge
        item.payload = {"key": (uri, run_id), **held}
        return item

    def artifacts(self, uri: str, run_id: str, draw: Callable[[Path], None], *, path: str = "cumulo") -> Item:
        """Draw files into a fresh directory (once) and log them under ``path`` of run ``run_id``."""
        holder: dict[str, Path] = {}

        def send(c: Any) -> None:
            if "dir" not in holder:
                directory = Path(tempfile.mkdtemp(prefix="cumulo-mlflow-"))
                try:
                    draw(directory)
                except Exception:
                    shutil.rmtree(directory, ignore_errors=True)
                    raise
                holder["dir"] = directory
            c.log_artifacts(run_id, str(holder["dir"]), artifact_path=path)
            shutil.rmtree(holder.pop("dir"), ignore_errors=True)

        def discard() -> None:
            if "dir" in holder:
                shutil.rmtree(holder.pop("dir"), ignore_errors=True)

        return self._item(f"the usage report of run {run_id}", uri, send, discard)
