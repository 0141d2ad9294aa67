"""Reading an ``ssh://`` target: which hosts, which users, which ports.

``ssh://user@gpu1,gpu2`` puts the scheduler on gpu1 and workers on both;
``ssh://user@host:2222`` names a port; a host may carry its own user
(``ssh://alice@gpu1,bob@gpu2``), else it inherits the first one's. With no user
the SSH config (or the local user name) decides, as `ssh` itself would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...exceptions import SpecError

__all__ = ["Host", "parse_target"]

_HOST_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Host:
    """One SSH host of a cluster.

    ``host_keys`` (OpenSSH public key lines) and ``key_file`` are for hosts that cumulo launched
    itself (cloud heads): their host keys were read over the cluster's own TLS and the login key is
    the cluster's own, so neither known_hosts nor the user's keys are consulted. Empty: ``ssh``'s way."""

    host: str
    port: int = 22
    user: str | None = None
    host_keys: tuple[str, ...] = ()
    key_file: str | None = None

    @property
    def label(self) -> str:
        """How the host is named in messages and resource ids: user@host:port."""
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def parse_target(target: str) -> list[Host]:
    """The hosts of ``ssh://...`` in order (the first runs the scheduler); SpecError naming the form."""
    example = "ssh://user@gpu1,gpu2 or ssh://user@host:2222"
    if not isinstance(target, str) or not target.startswith("ssh://"):
        raise SpecError(f"{target!r} is not an ssh:// target: write {example}")
    body = target[len("ssh://"):].strip().rstrip("/")
    if not body:
        raise SpecError(f"{target!r} names no host: write {example}")
    hosts: list[Host] = []
    user: str | None = None
    for item in body.split(","):
        m = _HOST_RE.match(item.strip())
        if m is None:
            raise SpecError(f"{item.strip()!r} in {target!r} is not [user@]host[:port]: write {example}")
        user = m["user"] or user
        port = int(m["port"]) if m["port"] else 22
        if not 0 < port < 65536:
            raise SpecError(f"port {port} of {item.strip()!r} is not a TCP port (1-65535)")
        host = Host(m["host"].strip("[]"), port, user)
        if any(h.host == host.host and h.port == host.port for h in hosts):
            raise SpecError(f"{host.label} appears twice in {target!r}: name each host once")
        hosts.append(host)
    # a user named later applies to the hosts before it that had none (ssh://gpu1,alice@gpu2 is unusual)
    return [h if h.user else Host(h.host, h.port, user) for h in hosts]
