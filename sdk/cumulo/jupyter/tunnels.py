"""SSH local port forwards that the Jupyter server keeps open to its clusters' dashboards.

A dashboard on an ssh:// host (or a cloud head) listens only on that host's
loopback: no port of it faces the network, since a Dask dashboard has no login.
The Jupyter server reaches it as ``ssh -L`` would: a listener on this machine's
127.0.0.1 at a free port, each connection carried over one SSH connection to the
host and on to ``127.0.0.1:<dashboard port>`` there.

The SSH connection is the server's own, made as its user would make it
(cumulo.providers.ssh.session: known_hosts checked, keys from the agent,
~/.ssh/config and ``cumulo.ssh.key-file``); a refused host key or login is the
session's own error, which says what to configure.

A tunnel is keyed by the cluster's id: opened on first use, reused while it is
up, opened again when its connection dropped or its target moved, and closed by
:meth:`Tunnels.keep_only` once its cluster is no longer running (the dashboard
route's sweep) or by :meth:`Tunnels.close_all` when the server stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..providers.ssh.session import Session, open_session
from ..providers.ssh.target import Host

__all__ = ["Tunnel", "Tunnels"]

log = logging.getLogger("cumulo.jupyter")

#: Where the dashboard listens on the far host: its loopback (the providers start it there).
REMOTE_LOOPBACK = "127.0.0.1"


@dataclass
class Tunnel:
    """One open forward: this machine's ``127.0.0.1:local_port`` to ``remote_port`` on ``host``'s loopback."""

    host: Host
    remote_port: int
    session: Session
    listener: Any

    @property
    def local_port(self) -> int:
        return int(self.listener.get_port())

    @property
    def is_open(self) -> bool:
        return self.session.is_open

    async def close(self) -> None:
        self.listener.close()
        await self.session.close()


class Tunnels:
    """The server's open tunnels, one per cluster id (see the module docstring).

    ``opener`` logs in to a host (``open_session`` by default); every method runs
    on the server's event loop.
    """

    def __init__(self, opener: Callable[[Host], Awaitable[Session]] = open_session) -> None:
        self._opener = opener
        self._tunnels: dict[str, Tunnel] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._tunnels

    def keys(self) -> list[str]:
        return list(self._tunnels)

    async def port(self, key: str, host: Host, remote_port: int) -> int:
        """The local port that reaches ``remote_port`` on ``host``'s loopback, opening the tunnel if needed.

        Concurrent first requests (a page and its scripts) share one tunnel. Raises
        the session's ConnectError / HostKeyRefused / CredentialsError / ProviderError.
        """
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            tunnel = self._tunnels.get(key)
            if tunnel is not None and tunnel.is_open and (tunnel.host, tunnel.remote_port) == (host, remote_port):
                return tunnel.local_port
            if tunnel is not None:  # dropped, or the cluster's dashboard moved: start over
                await self._drop(key)
            session = await self._opener(host)
            try:
                listener = await session.forward_local(REMOTE_LOOPBACK, remote_port)
            except BaseException:
                await session.close()
                raise
            tunnel = self._tunnels[key] = Tunnel(host, remote_port, session, listener)
            log.info("cumulo: dashboard tunnel for %s: 127.0.0.1:%d -> %s, port %d on its loopback",
                     key, tunnel.local_port, host.label, remote_port)
            return tunnel.local_port

    async def close(self, key: str) -> bool:
        """Close the tunnel of ``key``; whether there was one."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            return await self._drop(key)

    async def keep_only(self, keys: Iterable[str]) -> list[str]:
        """Close every tunnel whose key is not in ``keys`` (clusters no longer running); the keys closed."""
        keep = set(keys)
        gone = [k for k in list(self._tunnels) if k not in keep]
        for key in gone:
            await self.close(key)
        for key in [k for k, lock in self._locks.items() if k not in keep and not lock.locked()]:
            del self._locks[key]
        return gone

    async def close_all(self) -> None:
        """Close every tunnel (the server stops)."""
        await self.keep_only(())

    async def _drop(self, key: str) -> bool:
        tunnel = self._tunnels.pop(key, None)
        if tunnel is None:
            return False
        try:
            await tunnel.close()
        except Exception:  # a connection that already broke: it is closed either way
            log.debug("cumulo: closing the dashboard tunnel of %s", key, exc_info=True)
        log.info("cumulo: dashboard tunnel for %s closed", key)
        return True
