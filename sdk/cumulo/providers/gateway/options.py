"""A gateway's cluster options as a form: what to pass as ``connect("gateway://...", options=...)``."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from . import api

__all__ = ["cluster_options"]


def cluster_options(address: str | None = None, *, allow_insecure: bool | None = None) -> Any:
    """The gateway's cluster options (its server-side schema) as dask-gateway's ``Options``.

    In a notebook the object draws itself as a form; edit it there (or set
    attributes), then ``cumulo.connect(address, options=dict(opts))``. ``address``
    as connect() takes it; None uses dask-gateway's ``gateway.address`` config.
    Errors are connect()'s: CredentialsError, ConnectError, InsecureAddress.
    """
    target = api.target_of(address) if address else api.target_from_dask_config()
    api.check_transport(target, allow_insecure)

    async def read() -> Any:
        async with api.session(target) as gateway:
            return await gateway.call(gateway.gateway.cluster_options(), "reading its cluster options")

    # a notebook's main thread already runs an event loop: read on a thread of our own
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cumulo-gateway-options") as pool:
        return pool.submit(asyncio.run, read()).result()
