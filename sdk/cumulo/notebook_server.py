"""The Jupyter server this kernel runs under, as the kernel can tell: where its routes are for the browser.

A cluster's dashboard link must be one the user's browser can open. Under a
Jupyter server that is the server's own dashboard route
(``{base_url}cumulo/clusters/{name}/dashboard/status``, see
cumulo.jupyter.dashboard_proxy), behind the server's login, wherever the browser
and the kernel sit (JupyterHub, a Lab on a remote box, Binder). Elsewhere (a
script, a terminal) there is no such server, and the scheduler's own link is the
right one.

Found as dask's ``distributed.dashboard.link`` setting finds it:

1. ``JUPYTERHUB_SERVICE_PREFIX`` (JupyterHub sets it for the single-user server
   and its kernels): the route as a path under that prefix, which the browser
   resolves against the hub's own address;
2. ``JUPYTER_SERVER_URL``, which jupyter_server sets in its terminals (so that
   ``cumulo ls --dashboards`` in a Lab terminal gives the route too);
3. otherwise the server that started this kernel: the ``jpserver-<pid>.json``
   file that jupyter_server writes into the runtime directory, where ``<pid>`` is
   this kernel's parent process (jupyter_server launches kernels as its children).
   Only its ``url`` is read; the file's token never goes into a link.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["browser_link", "dashboard_path", "dashboard_route", "server_url"]


def _runtime_dir() -> Path:
    """jupyter_core's runtime directory (``JUPYTER_RUNTIME_DIR`` when set), read without importing the server."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir  # optional: only installs with Jupyter have it
    except ImportError:
        return Path(os.environ.get("JUPYTER_RUNTIME_DIR") or Path.home() / ".local/share/jupyter/runtime")
    return Path(jupyter_runtime_dir())


def server_url() -> str | None:
    """The base address of the Jupyter server this process is a kernel of, ending in ``/``; None when none.

    Under JupyterHub it is the service prefix (a path, e.g. ``/user/ana/``); otherwise the
    server's full URL with its base URL (e.g. ``http://localhost:8888/lab-base/``).
    """
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        return prefix if prefix.endswith("/") else prefix + "/"
    terminal = os.environ.get("JUPYTER_SERVER_URL")
    if terminal and terminal.startswith(("http://", "https://")):
        return terminal if terminal.endswith("/") else terminal + "/"
    info_file = _runtime_dir() / f"jpserver-{os.getppid()}.json"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return None
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    return url if url.endswith("/") else url + "/"


def dashboard_path(name: str, page: str = "status") -> str:
    """The dashboard route below a server's base URL: ``cumulo/clusters/<name>/dashboard/<page>``."""
    return f"cumulo/clusters/{name}/dashboard/{page.lstrip('/')}"


def dashboard_route(name: str, page: str = "status") -> str | None:
    """Cluster ``name``'s dashboard through this kernel's Jupyter server; None when the kernel runs under none."""
    base = server_url()
    return None if base is None else base + dashboard_path(name, page)


def browser_link(name: str, direct: str | None, *, provider_proxies: bool = False) -> str | None:
    """The dashboard link to show for cluster ``name``: the server's route where this process runs under a
    Jupyter server, else ``direct`` (the scheduler's own link); ``direct`` as it is where the provider proxies
    dashboards itself (dask-gateway), and None when the cluster serves no dashboard."""
    if direct is None or provider_proxies:
        return direct
    return dashboard_route(name) or direct
