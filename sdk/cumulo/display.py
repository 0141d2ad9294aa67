"""How clusters look: the plain-text repr for terminals and the HTML card for notebooks.

Small string templates, no widget library: the live cost/usage widget is a
separate view (widgets/) and falls back to these.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes, format_time

from .envsync import recorded
from .exceptions import CumuloError
from .notebook_server import browser_link

if TYPE_CHECKING:
    from .cluster import Cluster
    from .life.registry import ClusterRecord

__all__ = ["cluster_html", "cluster_text", "clusters_frame", "record_dashboard"]


def _facts(cluster: Cluster) -> dict[str, Any]:
    workers: dict[str, Any] = {}
    if cluster.client is not None and cluster.status == "running":
        workers = cluster.client.scheduler_info().get("workers", {})
    facts = cluster.facts
    return {
        "workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory": sum(w.get("memory_limit") or 0 for w in workers.values()),
        "gpus": facts.gpus if facts else 0,
        "gpu_model": (facts.gpu_model if facts else None) or "none",
    }


def cluster_text(cluster: Cluster) -> str:
    """One line for terminals and logs."""
    f = _facts(cluster)
    address = cluster.address or "-"
    return (
        f"<cumulo.Cluster {cluster.name!r} {cluster.provider} {address} status={cluster.status} "
        f"workers={f['workers']} threads={f['threads']} memory={format_bytes(f['memory'])} "
        f"gpus={f['gpus']} backend={cluster.backend}>"
    )


def cluster_html(cluster: Cluster) -> str:
    """The notebook card: workers, threads, memory, GPUs, backend, dashboard link."""
    f = _facts(cluster)
    e = html.escape
    dash = cluster.dashboard_link
    dash_html = f'<a href="{e(dash)}" target="_blank" rel="noopener">{e(dash)}</a>' if dash else "none"
    rows = [
        ("Provider", e(cluster.provider)),
        ("Status", e(cluster.status)),
        ("Scheduler", e(cluster.address or "-")),
        ("Workers", str(f["workers"])),
        ("Threads", str(f["threads"])),
        ("Memory", e(format_bytes(f["memory"]))),
        ("GPUs", f"{f['gpus']} × {e(f['gpu_model'])}" if f["gpus"] else "none"),
        ("Dataframe backend", e(cluster.backend)),
        ("Dashboard", dash_html),
    ]
    if cluster.id:
        environment = recorded(cluster.registry, cluster.id)
        if environment:
            rows.append(("Environment", e(environment)))
    body = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{k}</th><td style="text-align:left">{v}</td></tr>'
        for k, v in rows
    )
    return (
        f'<div class="cumulo-cluster"><strong>cumulo cluster {e(cluster.name)}</strong>'
        f"<table>{body}</table></div>"
    )


def clusters_frame(records: list[ClusterRecord]) -> Any:
    """The registry rows as a pandas DataFrame for cumulo.clusters()."""
    import pandas as pd

    now = time.time()
    rows = [
        {
            "name": r.name,
            "provider": r.provider,
            "address": r.address,
            "workers": r.workers,
            "gpus": r.gpus,
            "backend": r.backend,
            "state": "stop failed: may still bill" if r.may_bill else r.state,
            "age": format_time(((r.closed or now) - r.created)),
            "note": r.note or "",
            "created": pd.Timestamp(r.created, unit="s", tz="UTC"),
            "id": r.id,
        }
        for r in records
    ]
    columns = ["name", "provider", "address", "workers", "gpus", "backend", "state", "age", "note", "created", "id"]
    frame = pd.DataFrame(rows, columns=columns)
    # whole numbers stay whole (a missing one is <NA>, never a float NaN)
    return frame.astype({"workers": "Int64", "gpus": "Int64"})


def record_dashboard(record: ClusterRecord) -> str | None:
    """A registry row's dashboard link as this process's user opens it (notebook_server.browser_link);
    None for a closed cluster or one that serves no dashboard."""
    if not record.is_open or not record.dashboard:
        return None
    from .providers import provider_class  # heavy (every provider's module): only when dashboards are asked for

    try:
        proxies = provider_class(record.provider).proxies_dashboard
    except CumuloError:  # a provider this process does not know: its row's own link
        proxies = True
    return browser_link(record.name, record.dashboard, provider_proxies=proxies)
