"""cumulo's Jupyter server extension: the REST API behind the Compute sidebar, and the reaper.

The Jupyter server outlives kernels, so it is where the watch loop of
``cumulo reap`` runs (leases of dead kernels, budgets, idle timeouts), and it
is the owner of clusters launched from the sidebar. Enabled on install by
``jupyter-config/jupyter_server_config.d/cumulo.json``; ``jupyter server
extension list`` shows it.

Configuration comes from ``cumulo.jupyter.*`` in dask.config (see
cumulo.yaml): ``reap-interval`` and ``stop-owned-on-shutdown``.
"""

from __future__ import annotations

from typing import Any

from .app import CumuloExtension

__all__ = ["CumuloExtension", "_jupyter_server_extension_points", "_load_jupyter_server_extension",
           "load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """How jupyter_server finds the extension (an ExtensionApp, so it gets a shutdown hook)."""
    return [{"module": "cumulo.jupyter", "app": CumuloExtension}]


def _load_jupyter_server_extension(serverapp: Any) -> Any:
    """Load the extension into a running ServerApp (jupyter_server's entry point)."""
    return CumuloExtension._load_jupyter_server_extension(serverapp)


#: The name older servers (and the classic notebook server) look for.
load_jupyter_server_extension = _load_jupyter_server_extension
