"""What a cloud head reports about its own SSH server: its host public keys and its port.

Run in the head's scheduler (``run_function``, over the cluster's mutual TLS) once
it answers: the keys then come over a channel only this cluster's certificates can
open, so the Jupyter server can check the head's host key without ever trusting a
first use. Sent by value (cloudpickle): it imports nothing from cumulo, since the
head need not have cumulo installed.

``CUMULO_SSH_HOST_KEYS`` (a glob, default the image's ``/etc/ssh/ssh_host_*_key.pub``)
and ``CUMULO_SSH_PORT`` (default 22) are for a harness that runs the head's sshd
elsewhere, like bootstrap.py's ``CUMULO_ROOT``.
"""

from __future__ import annotations

import glob
import os
from typing import Any

#: Where an image keeps its sshd's host public keys.
HOST_KEYS = "/etc/ssh/ssh_host_*_key.pub"


def ssh_identity() -> dict[str, Any]:
    """``{"host_keys": [OpenSSH public key lines, type and key only], "port": int}`` of this machine's sshd."""
    keys = []
    for path in sorted(glob.glob(os.environ.get("CUMULO_SSH_HOST_KEYS") or HOST_KEYS)):
        try:
            with open(path) as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) >= 2:
            keys.append(f"{fields[0]} {fields[1]}")  # the comment names this machine: left out
    return {"host_keys": keys, "port": int(os.environ.get("CUMULO_SSH_PORT") or 22)}
