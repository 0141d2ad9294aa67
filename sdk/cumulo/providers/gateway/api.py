"""Talking to a dask-gateway server: its address, auth, settings, and every request with its errors mapped.

Everything here goes through dask-gateway's own asynchronous client
(``dask_gateway.Gateway``), which is imported only when a gateway is actually
used: the ``gateway`` extra is optional, and the reaper and the Jupyter server
import every provider class. Each request is bounded by ``cumulo.gateway.timeout``
and its failures become cumulo errors that name the gateway and say what to
set, never the secret: a refused password (HTTP 401) is a CredentialsError, a
gateway that does not answer a ConnectError, a cluster option it rejects a
SpecError with the gateway's own message and the options it does accept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import dask.config

from ... import config
from ...aio import until
from ...exceptions import (
    ConnectError,
    ConnectTimeout,
    CredentialsError,
    CumuloError,
    InsecureAddress,
    MissingDependency,
    ProviderError,
    SpecError,
    TerminateError,
)
from ...spec import is_loopback_host

__all__ = ["CUMULO_OPTIONS", "KIND", "Api", "Target", "call", "check_transport", "dask_gateway", "gateway_options",
           "make_auth", "session", "target_from_dask_config", "target_of", "timeout"]

T = TypeVar("T")

#: The resource kind under which a gateway cluster is recorded (its resource_id is the gateway's cluster name).
KIND = "gateway-cluster"
#: cumulo's own flags that connect() puts into spec.options; they are not the gateway's options.
CUMULO_OPTIONS = frozenset({"confirm", "keep_alive", "env_lock"})
_SCHEMES = {"gateway": "http", "gateway+https": "https"}
_AUTH_HELP = ("set the auth type in cumulo.gateway.auth or gateway.auth.type (DASK_GATEWAY__AUTH__TYPE), and its "
              "credentials in gateway.auth.kwargs (for basic auth DASK_GATEWAY__AUTH__KWARGS__USERNAME and "
              "DASK_GATEWAY__AUTH__KWARGS__PASSWORD)")


def dask_gateway() -> Any:
    """The dask_gateway module (importing it also registers distributed's ``gateway://`` comm)."""
    try:
        import dask_gateway as module
    except ImportError as exc:
        raise MissingDependency(
            f"the gateway provider needs dask-gateway ({exc}): pip install 'cumulo[gateway]'") from None
    return module


def timeout() -> float:
    """``cumulo.gateway.timeout`` in seconds: the bound on a start, a stop and each request."""
    return config.duration_seconds(config.get("gateway.timeout"))


@dataclass(frozen=True)
class Target:
    """A gateway as cumulo records it (``gateway://host:port[/prefix]``) and the HTTP(S) URL of its API."""

    address: str
    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


def target_of(address: str) -> Target:
    """Read ``gateway://host[:port][/prefix]`` (http) or ``gateway+https://...``; SpecError naming the form."""
    scheme, _, rest = address.partition("://")
    parts = urlsplit(f"{_SCHEMES.get(scheme, 'x')}://{rest}")
    if scheme not in _SCHEMES:
        raise SpecError(f"{address!r} is not a gateway address: write gateway://host:port (http) or "
                        "gateway+https://host (https)")
    if parts.username is not None or parts.password is not None:
        raise SpecError("the gateway address must not carry a user name or password (addresses are stored and "
                        f"shown): {_AUTH_HELP}")
    try:
        parts.port
    except ValueError:
        raise SpecError(f"{address!r} has no valid port: write e.g. gateway://127.0.0.1:8000") from None
    if not parts.hostname or parts.query or parts.fragment:
        raise SpecError(f"{address!r} is malformed: write gateway://host:port[/path] or gateway+https://host[/path]")
    url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return Target(address=f"{scheme}://{rest.rstrip('/')}", url=url)


def target_from_dask_config() -> Target:
    """The gateway named by dask-gateway's own ``gateway.address`` config, for connect("gateway")."""
    from dask_gateway.utils import format_template

    url = format_template(dask.config.get("gateway.address", None))
    if not url or "://" not in str(url):
        raise SpecError("connect('gateway') needs an address: connect('gateway://host:port') or "
                        "connect('gateway+https://host'), or set gateway.address in your dask config")
    scheme, _, rest = str(url).partition("://")
    return target_of(("gateway+https" if scheme == "https" else "gateway") + "://" + rest)


def check_transport(target: Target, allow_insecure: bool | None) -> None:
    """Refuse plain http to a gateway off this machine: its password or token would cross the network in clear."""
    allow = allow_insecure if allow_insecure is not None else bool(config.get("connect.allow-insecure-remote"))
    if target.url.startswith("http://") and not is_loopback_host(target.host) and not allow:
        raise InsecureAddress(
            f"refusing {target.address}: gateway:// is plain http, so the gateway credentials would cross the "
            f"network unencrypted. Use gateway+https://{target.address.split('://', 1)[1]}, or pass "
            "allow_insecure=True if this network is trusted.")


def gateway_options(options: dict[str, Any]) -> dict[str, Any]:
    """The spec's options minus cumulo's own flags: what is sent to the gateway as its cluster options."""
    return {k: v for k, v in options.items() if k not in CUMULO_OPTIONS}


def make_auth() -> Any:
    """dask-gateway's auth object: ``cumulo.gateway.auth`` if set, else its own ``gateway.auth.*`` config."""
    from dask_gateway.auth import get_auth

    kind = config.get("gateway.auth") or None
    try:
        return get_auth(kind)
    except (ValueError, TypeError, ImportError) as exc:
        # these messages name the auth type or a missing variable, never a credential's value
        raise CredentialsError(f"dask-gateway auth {kind or dask.config.get('gateway.auth.type', None)!r} could "
                               f"not be set up ({type(exc).__name__}: {exc}): {_AUTH_HELP}") from None


@contextlib.asynccontextmanager
async def session(target: Target) -> AsyncIterator[Api]:
    """An :class:`Api` over an asynchronous dask_gateway.Gateway on the running loop, closed afterwards."""
    module = dask_gateway()
    gateway = module.Gateway(target.url, auth=make_auth(), asynchronous=True)
    try:
        yield Api(gateway, target)
    finally:
        with contextlib.suppress(Exception):
            await gateway.close()


async def call(awaitable: Awaitable[T], target: Target, doing: str, *, auth: Any = None,
               seconds: float | None = None) -> T:
    """Await one gateway request within ``seconds`` (default cumulo.gateway.timeout), its errors as cumulo's.

    ValueError (the gateway's 404/422 answers) passes through for the caller to place.
    """
    import aiohttp

    limit = timeout() if seconds is None else seconds
    try:
        return await asyncio.wait_for(awaitable, limit)
    except CumuloError:
        raise
    except aiohttp.ContentTypeError:
        raise ConnectError(f"{target.url} answered while {doing}, but not as a dask-gateway API: check the "
                           f"address {target.address}") from None
    except aiohttp.ClientResponseError as exc:
        # `from None`: the request kept in the cause carries the Authorization header
        if exc.status in (401, 403):
            user = getattr(auth, "username", None)
            who = f" of user {user!r}" if user else ""
            raise CredentialsError(
                f"the dask-gateway at {target.address} refused the credentials{who} (HTTP {exc.status}) while "
                f"{doing}: {_AUTH_HELP}") from None
        raise ProviderError(f"the dask-gateway at {target.address} answered HTTP {exc.status} "
                            f"({exc.message}) while {doing}") from None
    except asyncio.TimeoutError:
        raise ConnectTimeout(f"the dask-gateway at {target.address} did not answer within {limit:g}s while "
                             f"{doing}; check that it runs, or raise cumulo.gateway.timeout") from None
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise ConnectError(f"cannot reach the dask-gateway at {target.address} ({target.url}) while {doing}: "
                           f"{exc}. Check that the gateway runs and that the address is right") from None
    except Exception as exc:
        module = dask_gateway()
        if isinstance(exc, (module.GatewayClusterError, module.GatewayServerError)):
            raise ProviderError(f"the dask-gateway at {target.address} failed while {doing}: {exc}") from None
        raise


class Api:
    """The few gateway requests cumulo makes, each through :func:`call`."""

    def __init__(self, gateway: Any, target: Target) -> None:
        self.gateway = gateway
        self.target = target

    async def call(self, awaitable: Awaitable[T], doing: str, *, seconds: float | None = None) -> T:
        return await call(awaitable, self.target, doing, auth=self.gateway.auth, seconds=seconds)

    async def option_names(self) -> list[str]:
        """The cluster options this gateway accepts (its server-side schema)."""
        try:
            options = await self.call(self.gateway.cluster_options(), "reading its cluster options")
        except ValueError as exc:
            raise ConnectError(f"{self.target.url} is not a dask-gateway API ({exc}): check the address "
                               f"{self.target.address} (a JupyterHub-hosted gateway lives under "
                               "/services/dask-gateway)") from None
        return list(options)

    async def submit(self, options: dict[str, Any]) -> str:
        """Ask for a new cluster; its name. An option the gateway rejects is a SpecError with its message."""
        try:
            return await self.call(self.gateway.submit(**options), "creating a cluster")
        except ValueError as exc:
            accepted = await self.option_names()
            raise SpecError(f"the dask-gateway at {self.target.address} rejected the cluster options: {exc}. "
                            f"It accepts options={{...}} with: {', '.join(accepted) or 'none'}") from None

    async def report(self, name: str) -> Any:
        """The gateway's report on cluster ``name``, or None when the gateway no longer knows it."""
        try:
            return await self.call(self.gateway.get_cluster(name), f"reading the state of cluster {name}")
        except ValueError:  # 404: the gateway holds no cluster of that name
            return None

    async def stop_confirmed(self, name: str, *, deadline: float) -> str:
        """Stop cluster ``name``; return once the gateway reports it stopped, failed or no longer known.

        Returns what the gateway last said ("stopped", "failed", "unknown"). TerminateError
        when it still reports the cluster pending, running or stopping at ``deadline`` (a
        loop.time()); the errors of :func:`call` when it cannot be asked.
        """
        from dask_gateway.client import ClusterStatus

        gone = (ClusterStatus.STOPPED, ClusterStatus.FAILED)

        def settled(report: Any) -> str | None:
            if report is None:
                return "unknown"
            return report.status.name.lower() if report.status in gone else None

        state = await self.report(name)
        if settled(state) is not None:
            return str(settled(state))
        await self.call(self.gateway.stop_cluster(name), f"stopping cluster {name}")

        async def stopped() -> str | None:
            nonlocal state
            state = await self.report(name)
            return settled(state)

        try:
            return await until(stopped, timeout=max(deadline - asyncio.get_running_loop().time(), 0.0),
                               interval=0.25)
        except TimeoutError:
            raise TerminateError(
                f"the dask-gateway at {self.target.address} still reports cluster {name} as "
                f"{state.status.name.lower()}; it may still be running (and billing): retry `cumulo down`, "
                "or ask the gateway's administrators") from None
