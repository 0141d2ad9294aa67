"""The route ``{base_url}cumulo/clusters/{name}/dashboard/{path}``: a cluster's Dask dashboard, proxied.

HTTP and websockets (Bokeh's plots stream over one) are forwarded by
jupyter-server-proxy's ``ProxyHandler``, the library dask-labextension builds on,
to the ``host:port`` that cumulo.jupyter.dashboard resolves from the registry
(directly, or through an SSH tunnel). The handler only adds what is cumulo's:

- the server's login, then its authorizer for the ``cumulo`` resource, as on
  every cumulo route: a request without a token or cookie never reaches a
  dashboard (a websocket upgrade without one is refused with 403);
- the target comes from the registry, never from the URL, so the route cannot
  be pointed at another host;
- jupyter_server's XSRF check on requests that change something (which
  jupyter-server-proxy leaves to the proxied app, and the Dask dashboard has none);
- an unknown, stopped or dashboard-less cluster is a 404 with one short line,
  an unreachable SSH host the status of its cumulo error (never a 500 page);
- a gateway cluster redirects to the gateway's own dashboard proxy.

The prefix is stripped before forwarding (the dashboard sees ``/status``) and
redirects that the dashboard sends (``/`` to ``/status``) are rewritten back
under the route, as jupyter-server-proxy does for its ``/proxy/<port>/`` routes;
the Dask dashboard's own links are relative, so its pages work under any prefix.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web
from tornado.iostream import StreamClosedError

from ..exceptions import CumuloError
from .dashboard import Dashboards, Elsewhere, Target
from .handlers import AUTH_RESOURCE, dashboard_pattern, http_status

__all__ = ["DashboardProxyHandler", "dashboard_handlers"]


class DashboardProxyHandler(ProxyHandler):
    """Forwards one cluster's dashboard (see the module docstring)."""

    auth_resource = AUTH_RESOURCE
    _target: Target | None = None

    @property
    def dashboards(self) -> Dashboards:
        return self.settings["cumulo_dashboards"]

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        await super().prepare(*args, **kwargs)  # the server's login (403 for a websocket without one)
        if not self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE):
            raise web.HTTPError(403, "not authorized to read cumulo's clusters")
        name = self.path_kwargs["name"]
        self.proxy_base = url_path_join("cumulo", "clusters", name, "dashboard")
        try:
            self._target = await self.dashboards.target(name)
        except Elsewhere as exc:
            if self.request.headers.get("Upgrade", "").lower() == "websocket":
                raise web.HTTPError(404, f"cluster {name!r} serves its dashboard at {exc.link}") from None
            self.redirect(exc.link)
        except CumuloError as exc:
            raise web.HTTPError(http_status(exc), str(exc).replace("%", "%%"), reason=_reason(exc)) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """One short line of text: what went wrong and what to do (no traceback page, even for a bug)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message % exc.args if isinstance(exc, web.HTTPError) and exc.log_message else None
        self._headers.pop("Content-Encoding", None)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}: {message or 'the dashboard could not be reached'}\n")

    def check_xsrf_cookie(self) -> None:
        """jupyter_server's XSRF check, which jupyter-server-proxy leaves to the proxied app: a request that
        changes something (POST, PUT, DELETE, PATCH) and carries only the login cookie must also carry the
        XSRF token, so that another site's page cannot make the user's browser send it to a dashboard."""
        JupyterHandler.check_xsrf_cookie(self)

    def _where(self, proxied_path: str | None) -> tuple[str, int, str]:
        assert self._target is not None
        return self._target.host, self._target.port, proxied_path or "/"

    def _allowed(self, host: str) -> bool:
        """jupyter-server-proxy's host check: only the host this request resolved to from the registry."""
        return self._target is not None and host == self._target.host

    async def proxy(self, host: str, port: int, proxied_path: str) -> Any:
        """jupyter-server-proxy's forward; a dashboard that does not answer (its cluster just stopped, a
        tunnel dropped) is resolved again: a 404 when its cluster is gone, else a 502 saying so."""
        try:
            return await super().proxy(host, port, proxied_path)
        except web.HTTPError as exc:
            # raised (not relayed) statuses are the connection's: 599 no answer in time, 500 reset
            if exc.status_code not in (500, 599):
                raise
            await self._not_answering()
        except (OSError, StreamClosedError):  # refused: nothing listens there any more
            await self._not_answering()

    async def _not_answering(self) -> None:
        name = self.path_kwargs["name"]
        self.dashboards.forget(name)
        try:
            await self.dashboards.target(name)
        except CumuloError as gone:
            raise web.HTTPError(http_status(gone), str(gone).replace("%", "%%"), reason=_reason(gone)) from None
        raise web.HTTPError(502, f"the dashboard of cluster {name!r} did not answer; try again in a moment, "
                            "and check the cluster with `cumulo ls`", reason="DashboardNotAnswering")

    async def http_get(self, name: str, proxied_path: str | None = None) -> None:
        if not proxied_path:  # .../dashboard: the dashboard's front page
            self.redirect(url_path_join(self.base_url, self.proxy_base, "status"))
            return
        return await self.proxy(*self._where(proxied_path))

    async def open(self, name: str, proxied_path: str | None = None) -> None:
        return await self.proxy_open(*self._where(proxied_path))

    def _forward(self, name: str, proxied_path: str | None = None) -> Any:
        """Every other verb (POST, PUT, DELETE, HEAD, PATCH, OPTIONS) goes to the dashboard as it came."""
        return self.proxy(*self._where(proxied_path))

    post = put = delete = head = patch = options = _forward


def _reason(exc: CumuloError) -> str:
    """The HTTP reason phrase: the error's class name (e.g. ClusterNotFound), as cumulo's JSON routes say it."""
    return type(exc).__name__


def dashboard_handlers(base_url: str) -> list[tuple[str, type[DashboardProxyHandler], dict[str, Any]]]:
    """The dashboard route under ``<base_url>/cumulo/clusters/<name>/dashboard``."""
    allow = {"host_allowlist": lambda handler, host: handler._allowed(host)}
    return [(dashboard_pattern(base_url), DashboardProxyHandler, allow)]
