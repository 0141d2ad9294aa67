"""How this machine reaches a cloud head over SSH: for the Jupyter server's dashboard tunnel.

A cloud head's dashboard listens on the head's loopback only (bootstrap.py), so the
server reaches it as for an ssh:// host: a port forward over SSH
(cumulo.jupyter.tunnels). Unlike an ssh:// host, nobody has put a cloud head in
a known_hosts file, and cumulo never trusts a first use. So once the head's
scheduler answers over the cluster's own mutual TLS, the launch asks it for its
sshd's host keys and port (_head_ssh.py, run in the scheduler) and records them
on the head's instance; the login uses the cluster's own key, made at launch
(sshkey.py), as the image's login user (``cumulo.cloud.ssh-user``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import cloudpickle
from distributed.core import rpc
from distributed.protocol import pickle
from distributed.security import Security

from ...exceptions import ProviderError
from ...life.registry import ResourceRecord
from ..ssh.target import Host
from . import _head_ssh

__all__ = ["SSH_META", "head_host", "read_head_ssh"]

cloudpickle.register_pickle_by_value(_head_ssh)

#: The key of the head instance's resource meta that holds what :func:`read_head_ssh` returned.
SSH_META = "ssh"


async def read_head_ssh(address: str, security: Security, *, timeout: float = 10.0) -> dict[str, Any] | None:
    """The head's sshd host keys and port, read in its scheduler over TLS; None when it could not say
    (no sshd keys where the image keeps them, or the scheduler refused to run it)."""
    try:
        async with rpc(address, connection_args=security.get_connection_args("client"), timeout=timeout) as s:
            answer = await asyncio.wait_for(s.run_function(function=pickle.dumps(_head_ssh.ssh_identity)), timeout)
    except (OSError, asyncio.TimeoutError, TimeoutError):
        return None
    if not isinstance(answer, dict) or answer.get("status") != "OK":
        return None
    found = answer.get("result")
    if not isinstance(found, dict) or not found.get("host_keys"):
        return None
    return {"host_keys": [str(k) for k in found["host_keys"]], "port": int(found.get("port") or 22)}


def head_host(resources: list[ResourceRecord], *, user: str, title: str) -> Host:
    """The head as an SSH :class:`Host` (its public address, recorded host keys, the cluster's own key).

    ProviderError saying why when the row lacks any of it (a cluster launched before cumulo recorded it,
    a head with no sshd keys, a key the user named instead of the cluster's own)."""
    head = next((r for r in resources if r.kind == "instance" and isinstance(r.meta.get(SSH_META), dict)), None)
    if head is None:
        raise ProviderError(f"this {title} cluster's head reported no SSH host key when it started, so the Jupyter "
                            "server cannot check it and does not tunnel to its dashboard; use `ssh -L` as "
                            f"docs/dashboard.md shows, or start a new cluster")
    ssh = head.meta[SSH_META]
    key = next((r.meta.get("private_key") for r in resources if r.kind == "ssh-key" and r.meta.get("private_key")),
               None)
    if not key:
        raise ProviderError(f"this {title} cluster logs in with an SSH key you named, not one cumulo made for it, so "
                            "the Jupyter server has no key to tunnel to its dashboard with; use `ssh -L` as "
                            "docs/dashboard.md shows")
    return Host(str(ssh["ip"]), int(ssh["port"]), user, host_keys=tuple(ssh["host_keys"]), key_file=str(key))
