"""The client side of one cluster: the Client, what the environment check learned, and the dataframe backend.

A :class:`~cumulo.cluster.Cluster` attaches a ``distributed.Client`` to its
scheduler, probes the workers (versions, GPUs: :mod:`cumulo.envsync.envcheck`) and
switches dask's ``dataframe.backend`` to match them, so that the same user code
runs on pandas or cuDF. On close it puts the backend back. That is one idea,
kept apart from the cluster's life (start, stop, guards) that drives it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed import Client
from distributed.security import Security

from . import config
from .envsync import envcheck
from .exceptions import ConnectTimeout

__all__ = ["ClientLink", "sizes"]


class ClientLink:
    """A Client to one scheduler, the facts learned through it, and the dataframe backend they chose.

    ``asynchronous``: the cluster's client is used with ``await``; it is then not made
    dask's default client, and the backend is switched only once.
    """

    def __init__(self, *, asynchronous: bool) -> None:
        self.asynchronous = asynchronous
        self.client: Client | None = None
        #: What the environment check learned on connect (None before).
        self.facts: envcheck.ClusterFacts | None = None
        #: 'cudf' when the workers have GPUs, else 'pandas'.
        self.backend = "pandas"
        self._previous_backend: str | None = None

    async def connect(self, address: str, security: Security | None) -> Client:
        """Attach a Client (ConnectTimeout, saying what to check, when no scheduler answers in time)."""
        timeout = parse_timedelta(config.get("connect.timeout"))
        envcheck.quiet_patch_level_warnings()  # python 3.11.7 against 3.11.2 is not a mismatch
        try:
            self.client = await asyncio.wait_for(
                Client(address, security=security, asynchronous=True, timeout=timeout,
                       set_as_default=not self.asynchronous),
                timeout + 5,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectTimeout(
                f"no Dask scheduler answered at {address} within {timeout:g}s: check that it is running and "
                "reachable from here, or raise cumulo.connect.timeout"
            ) from exc
        return self.client

    async def describe(self) -> envcheck.ClusterFacts:
        """Probe versions and GPUs, pick the dataframe backend, run the version check."""
        assert self.client is not None
        self.facts = await envcheck.gather(self.client)
        envcheck.check(self.facts)
        self.backend = self.facts.backend
        if not self.asynchronous or self._previous_backend is None:
            self._previous_backend = dask.config.get("dataframe.backend", "pandas")
            dask.config.set({"dataframe.backend": self.backend})
        return self.facts

    async def close(self) -> None:
        """Close the Client (bounded; a scheduler that is gone is no error here)."""
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.close(), 10)
            except Exception:
                pass

    def restore_backend(self) -> None:
        """Put dask's dataframe backend back as it was, unless something else changed it meanwhile."""
        if self._previous_backend is not None and dask.config.get("dataframe.backend", None) == self.backend:
            dask.config.set({"dataframe.backend": self._previous_backend})
        self._previous_backend = None


def sizes(identity: dict[str, Any]) -> dict[str, int]:
    """Workers, threads and memory from a scheduler identity."""
    workers = identity.get("workers", {})
    return {
        "workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory": sum(w.get("memory_limit") or 0 for w in workers.values()),
    }
