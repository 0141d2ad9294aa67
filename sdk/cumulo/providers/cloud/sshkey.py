"""A fresh SSH key pair per cluster: the private half stays here (mode 600), the public half goes to the cloud.

Lambda (like most clouds) puts one registered SSH key on every instance. Using "the
first key on the account" could hand a colleague's key root on your instances,
and an account with no key could not launch at all; so cumulo makes an
ed25519 pair for each cluster, keeps the private half next to the cluster's
TLS files (removed with them), and registers the public half (named by the cloud adapter, e.g.
``cumulo-<installation>-<cluster id>``) until the cluster is torn down.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ["PRIVATE_KEY_FILE", "new_key_pair"]

#: The private key's file name inside the cluster's certificate directory.
PRIVATE_KEY_FILE = "ssh-key"


def new_key_pair(directory: Path, *, comment: str) -> tuple[Path, str]:
    """Write a new ed25519 private key (OpenSSH format, mode 600) into ``directory``.

    Returns its path and the public key as one OpenSSH line ending in ``comment``.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    path = Path(directory) / PRIVATE_KEY_FILE
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return path, f"{public.decode()} {comment}"
