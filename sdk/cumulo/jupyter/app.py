"""The ExtensionApp that wires the manager, the routes and the reaper into a Jupyter server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jupyter_server.extension.application import ExtensionApp

from .. import config
from ..exceptions import ConfigError, CumuloError
from ..life.registry import Registry
from .dashboard import Dashboards
from .handlers import NoDashboardProxy, dashboard_pattern, make_handlers
from .manager import ClusterManager

__all__ = ["CumuloExtension", "Reaper"]

log = logging.getLogger("cumulo.jupyter")


class Reaper:
    """Runs ``manager.reap()`` every ``interval`` seconds on a thread while the server's loop runs.

    A sweep that fails is logged and the loop goes on: one unreachable provider
    must not stop the guards for every other cluster.
    """

    def __init__(self, manager: ClusterManager, interval: float) -> None:
        self.manager = manager
        self.interval = interval
        self.sweeps = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cumulo-reaper")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                stopped = await loop.run_in_executor(None, self.manager.reap)
            except ImportError as exc:
                log.warning("cumulo reaper disabled: %s", exc)
                return
            except CumuloError as exc:
                log.warning("cumulo reaper: sweep failed, will retry in %.0fs: %s", self.interval, exc)
            except Exception:  # any other fault of one sweep (a provider's bug, the OS): the guards go on
                log.exception("cumulo reaper: sweep failed unexpectedly, will retry in %.0fs", self.interval)
            else:
                for item in stopped:
                    log.info("cumulo reaper stopped %s", item)
            self.sweeps += 1

    async def stop(self) -> None:
        """Stop the timer; never raises (shutdown must go on to close the clusters the server owns)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # the loop ended on an error earlier: it was logged, and shutdown goes on
                log.exception("cumulo reaper: the timer had stopped on an error")
            self._task = None


class CumuloExtension(ExtensionApp):
    """Serves ``<base_url>/cumulo/`` and keeps watch over the user's clusters."""

    name = "cumulo"
    load_other_extensions = True

    manager: ClusterManager
    reaper: Reaper
    dashboards: Dashboards

    def initialize_settings(self) -> None:
        """Check the cumulo config, then set up the manager and the reaper.

        A config value that fails the schema would otherwise surface later as a reaper
        that dies on its first sweep (or a guard read as "off"). Then the error naming
        the key is logged, no reaper runs, and every cumulo route answers with it, so
        that the Compute sidebar shows it too, until the server is restarted with it fixed.
        """
        self.manager = ClusterManager(Registry())
        self.settings["cumulo_manager"] = self.manager
        self.dashboards = Dashboards(self.manager.registry)
        self.manager.dashboard_problem = self.dashboards.problem
        self.settings["cumulo_dashboards"] = self.dashboards
        try:
            config.validate()
        except ConfigError as exc:
            self.settings["cumulo_config_error"] = exc
            self.reaper = Reaper(self.manager, 0.0)
            self.log.error("cumulo: %s Until it is fixed and the server restarted, the Compute sidebar and "
                           "the reaper are off.", exc)
            return
        configured = config.get("jupyter.reap-interval")
        interval = config.duration_seconds(configured) if configured is not None else 0.0
        self.reaper = Reaper(self.manager, interval)
        self.log.info("cumulo: registry %s, reaper every %ss", self.manager.registry.path, interval or "(off)")

    def initialize_handlers(self) -> None:
        # Routes are absolute (base_url included), so they go to the web app directly,
        # not through ExtensionApp.handlers (which would prefix them with the extension's name).
        base_url = self.serverapp.base_url
        self.serverapp.web_app.add_handlers(".*$", make_handlers(base_url))
        try:
            from .dashboard_proxy import dashboard_handlers  # optional extra: jupyter-server-proxy (cumulo[lab])
        except ImportError:
            self.log.warning("cumulo: jupyter-server-proxy is not installed: clusters' dashboards are not proxied "
                             "(pip install 'cumulo[lab]')")
            self.serverapp.web_app.add_handlers(".*$", [(dashboard_pattern(base_url), NoDashboardProxy)])
        else:
            self.serverapp.web_app.add_handlers(".*$", dashboard_handlers(base_url))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self.reaper.start()

    async def stop_extension(self) -> None:
        await self.reaper.stop()  # never raises: what the server owns is closed below in any case
        await self.dashboards.stop()  # never raises: closes the dashboards' SSH tunnels
        if config.get("jupyter.stop-owned-on-shutdown", True):
            loop = asyncio.get_running_loop()
            names = await loop.run_in_executor(None, self.manager.close_owned)
            if names:
                self.log.info("cumulo: stopped clusters launched from JupyterLab: %s", ", ".join(names))
