"""REST handlers of the cumulo server extension, under ``<base_url>/cumulo/``.

    GET    clusters                 the user's clusters and the spend meter's totals
    POST   clusters                 launch a cluster from a JSON spec (202, launches in the background)
    POST   clusters/<name>/scale    {"workers": n} for a cluster this server launched
    DELETE clusters/<name>          stop a cluster, whoever started it
    GET    clusters/<name>/usage    one cluster's row, events and ledger
    GET    prices                   GPU offers of the price catalog (?gpu=&provider=)
    POST   gateway-options          the configured dask-gateway's cluster options as form fields
                                    ({"address": "gateway://..."} optional, and only that gateway)
    *      clusters/<name>/dashboard/<path>   the cluster's Dask dashboard, proxied (dashboard_proxy.py)

Each handler is thin: parse, call the ClusterManager (on a thread when it may
block), write JSON. Every verb is authenticated and authorised with
jupyter_server's decorators; POST and DELETE are subject to its XSRF check.
A route that makes the server contact something on the user's behalf is a POST,
never a GET: jupyter_server checks no XSRF token on a GET, so any page the user
visits could make it (an ``<img>`` sends the login cookie).
cumulo's errors become HTTP statuses in one table (:data:`HTTP_STATUS`); any
other exception is a bug and is left to jupyter_server's 500 page.
"""

from __future__ import annotations

import json
from typing import Any

import tornado
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.ioloop import IOLoop

from ..exceptions import (
    BudgetExceeded,
    CapacityError,
    ClusterNotFound,
    ConfigError,
    ConnectError,
    CredentialsError,
    CumuloError,
    InsecureAddress,
    LaunchTimeout,
    NotOwner,
    ProviderError,
    QuotaError,
    RateLimited,
    RegistryError,
    SpecError,
)
from .manager import ClusterManager, to_json

__all__ = ["HTTP_STATUS", "NoDashboardProxy", "dashboard_pattern", "http_status", "make_handlers"]

#: cumulo exception -> HTTP status. The most specific class in an exception's MRO wins.
HTTP_STATUS: dict[type[CumuloError], int] = {
    SpecError: 400,
    ConfigError: 400,
    ClusterNotFound: 404,
    NotOwner: 409,
    BudgetExceeded: 409,
    CredentialsError: 424,
    CapacityError: 503,
    QuotaError: 403,
    RateLimited: 429,
    LaunchTimeout: 504,
    InsecureAddress: 400,  # refused by its form (plain http off loopback), not by a failed connection
    ConnectError: 502,
    ProviderError: 502,
    RegistryError: 503,
    CumuloError: 500,
}

#: The auth resource checked by jupyter_server's Authorizer for every cumulo route.
AUTH_RESOURCE = "cumulo"
_NAME = r"(?P<name>[a-z0-9][a-z0-9_.-]{0,62})"


def http_status(exc: CumuloError) -> int:
    """The HTTP status for a cumulo error (its nearest class in :data:`HTTP_STATUS`)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


class CumuloHandler(APIHandler):
    """Base: the manager from settings, JSON in and out, cumulo errors as statuses."""

    auth_resource = AUTH_RESOURCE

    @property
    def manager(self) -> ClusterManager:
        return self.settings["cumulo_manager"]

    def body_json(self) -> Any:
        """The request body as JSON; a 400 saying so when it is not."""
        if not self.request.body:
            return {}
        try:
            return json.loads(self.request.body, parse_constant=_no_constant)
        except ValueError as exc:
            raise Refused(400, f"request body is not JSON: {exc}", "SpecError") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A refusal is JSON {"message", "error"} with the whole message; the rest as jupyter_server writes it."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Refused):
            self.set_header("Content-Type", "application/json")
            self.finish(to_json({"message": exc.message, "error": exc.error, "reason": exc.reason}))
            return
        super().write_error(status_code, **kwargs)

    async def call(self, fn: Any, *args: Any, blocking: bool = False, **kwargs: Any) -> Any:
        """Run a manager method (on a thread when ``blocking``), mapping cumulo errors to statuses.

        While the server's cumulo config is invalid (see CumuloExtension.initialize_settings)
        every call is refused with that error, which names the key to fix.
        """
        config_error = self.settings.get("cumulo_config_error")
        if config_error is not None:
            raise Refused(http_status(config_error), str(config_error), type(config_error).__name__)
        try:
            if blocking:
                return await IOLoop.current().run_in_executor(None, lambda: fn(*args, **kwargs))
            return fn(*args, **kwargs)
        except CumuloError as exc:
            raise Refused(http_status(exc), str(exc), type(exc).__name__) from exc

    def reply(self, data: Any, status: int = 200) -> None:
        """Write ``data`` as JSON; numbers that are not finite (NaN, inf) go out as null."""
        self.set_status(status)
        self.finish(to_json(data))


def _no_constant(word: str) -> Any:
    """json.loads accepts NaN and Infinity, which are not JSON: refuse them like any other bad body."""
    raise ValueError(f"{word} is not a JSON value; send a finite number, or null")


class Refused(tornado.web.HTTPError):
    """A request refused on purpose: the status, the full message for the user, the error class name."""

    def __init__(self, status: int, message: str, error: str) -> None:
        # log_message is %-formatted by tornado's logger: escape it; the client gets ``message`` verbatim.
        super().__init__(status, message.replace("%", "%%"))
        self.message = message
        self.error = error


class ClustersHandler(CumuloHandler):
    """GET: list; POST: launch."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.manager.list, blocking=True))

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body_json()
        self.reply(await self.call(self.manager.launch, body, blocking=True), status=202)


class ClusterHandler(CumuloHandler):
    """DELETE: stop the named cluster."""

    @tornado.web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        self.reply(await self.call(self.manager.stop, name, blocking=True))


class ScaleHandler(CumuloHandler):
    """POST {"workers": n}: scale a cluster this server launched."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        body = self.body_json()
        self.reply(await self.call(self.manager.scale, name, body, blocking=True))


class UsageHandler(CumuloHandler):
    """GET: one cluster's usage and cost."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        self.reply(await self.call(self.manager.usage, name, blocking=True))


class PricesHandler(CumuloHandler):
    """GET ?gpu=&provider=: GPU offers for the New cluster form."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        gpu = self.get_query_argument("gpu", None) or None
        provider = self.get_query_argument("provider", None) or None
        self.reply(await self.call(self.manager.prices, gpu=gpu, provider=provider, blocking=True))


class GatewayOptionsHandler(CumuloHandler):
    """POST {"address"?}: the server's configured dask-gateway's cluster options, for the New cluster form.

    A POST, so that jupyter_server's XSRF check applies: reading the options makes the
    server call the gateway with its own credentials (dask-gateway's ``gateway.auth.*``
    config), which a cross-site GET must never trigger. Only the gateway of the server's
    ``gateway.address`` config is asked; an ``address`` naming any other is refused
    (400) before any traffic, and nothing in the request is used as a credential.
    Refused credentials are a CredentialsError (424), a gateway that does not answer a
    ConnectError (502), a malformed or insecure address a SpecError (400).
    """

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body_json()
        address = body.get("address") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(address, (str, type(None))):
            raise Refused(400, 'gateway-options takes {"address": "gateway://host:port"} (or no address)',
                          "SpecError")
        self.reply(await self.call(self.manager.gateway_options, (address or "").strip() or None, blocking=True))


class NoDashboardProxy(CumuloHandler):
    """The dashboard route where jupyter-server-proxy is not installed: a 501 that says how to get it."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str, proxied_path: str | None = None) -> None:
        raise Refused(501, "the Jupyter server proxies Dask dashboards with jupyter-server-proxy, which is not "
                      "installed here: pip install 'cumulo[lab]' and restart the server (the link that "
                      f"cluster {name!r}'s scheduler reports still works where your browser can reach it)",
                      "MissingDependency")


def dashboard_pattern(base_url: str) -> str:
    """The dashboard route's pattern: ``<base_url>/cumulo/clusters/<name>/dashboard[/<proxied_path>]``."""
    return url_path_join(base_url, "cumulo", "clusters", _NAME, "dashboard") + r"(?P<proxied_path>/.*)?"


def make_handlers(base_url: str) -> list[tuple[str, type[CumuloHandler]]]:
    """The routes of the extension under ``<base_url>/cumulo/``."""
    root = url_path_join(base_url, "cumulo")
    return [
        (url_path_join(root, "clusters") + "/?", ClustersHandler),
        (url_path_join(root, "clusters", _NAME, "scale") + "/?", ScaleHandler),
        (url_path_join(root, "clusters", _NAME, "usage") + "/?", UsageHandler),
        (url_path_join(root, "clusters", _NAME) + "/?", ClusterHandler),
        (url_path_join(root, "prices") + "/?", PricesHandler),
        (url_path_join(root, "gateway-options") + "/?", GatewayOptionsHandler),
    ]
