"""The one gateway a Jupyter server may reach with its own credentials.

A request to the server (the sidebar's form, a launch) must never make it send
its dask-gateway credentials (a basic password, a JupyterHub token) to a host the
request chose: the server reaches only the gateway of its own dask-gateway
``gateway.address`` config. A notebook, which holds the user's own credentials,
may name any gateway.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...exceptions import SpecError
from . import api

__all__ = ["check_same", "configured", "same_gateway"]


def configured() -> str:
    """The server's own gateway (``gateway.address``) as cumulo writes it; SpecError if none is set."""
    api.dask_gateway()  # MissingDependency naming the extra, before its config is read
    try:
        return api.target_from_dask_config().address
    except SpecError:
        raise SpecError("this server has no dask-gateway configured: set gateway.address in the dask config of "
                        "the Jupyter server (e.g. DASK_GATEWAY__ADDRESS=https://gateway.example.org) and restart "
                        "it; the server reaches only that gateway with its credentials") from None


def same_gateway(address: str, other: str) -> bool:
    """Whether two gateway addresses name the same gateway (scheme, host, port and path; host case ignored)."""
    a, b = urlsplit(api.target_of(address).url), urlsplit(api.target_of(other).url)
    return (a.scheme, (a.hostname or "").lower(), a.port, a.path) == \
        (b.scheme, (b.hostname or "").lower(), b.port, b.path)


def check_same(address: str, *, what: str) -> str:
    """The configured gateway, after checking that ``address`` (a request's) names it; SpecError if not."""
    own = configured()
    if not same_gateway(address, own):
        raise SpecError(
            f"this server {what} its own gateway, {own}; {address} is not it (the server's gateway "
            "credentials go nowhere else). To use another gateway, set gateway.address in the dask config of the "
            "Jupyter server (e.g. DASK_GATEWAY__ADDRESS) and restart it, or connect from a notebook with "
            "cumulo.connect(address)")
    return own
