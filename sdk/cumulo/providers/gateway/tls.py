"""A gateway cluster's TLS credentials, kept on this machine so other processes can re-attach.

dask-gateway hands its cluster's certificate and key (one pair, also the CA:
the gateway signs nothing else with it) only to the user who owns the cluster,
over its API. The launching process writes them to
``<certs root>/<cluster id>/`` (the folder mode 700, the files 600; never the
registry), so that ``cumulo.connect(name=...)`` in another process of this user,
the CLI and the Jupyter server reach the scheduler without asking the gateway
again. They are removed once the gateway confirms the cluster stopped. The
certs root is ``cumulo.gateway.certs-dir``, else ``gateway-tls`` beside the registry.
Where they are missing (another machine, a removed folder), :func:`from_gateway`
asks the gateway for them, as dask-gateway's own ``Gateway.connect`` does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distributed.security import Security

from ... import config
from ...aio import blocking
from ...exceptions import CredentialsError
from ...life.registry import ClusterRecord
from ...security.tlscerts import private_folder
from . import api

__all__ = ["certs_root", "from_gateway", "load", "remove", "save", "security_of"]

_CERT, _KEY = "cluster.pem", "cluster-key.pem"


def certs_root() -> Path:
    """The folder holding one credentials folder per gateway cluster."""
    configured = config.get("gateway.certs-dir")
    if configured:
        return Path(configured).expanduser()
    return config.path_of_registry().parent / "gateway-tls"


def security_of(cert: str, key: str) -> Security:
    """A client Security from the gateway's PEM certificate and key (held in memory, encryption required).

    The certificate is its own CA: dask-gateway signs each cluster's pair itself.
    """
    return Security(tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def save(cluster_id: str, cert: str, key: str) -> Path:
    """Write the pair for ``cluster_id`` (files mode 600 in a private folder); the folder."""
    folder = private_folder(certs_root(), cluster_id)
    for name, text in ((_CERT, cert), (_KEY, key)):
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return folder


def load(cluster_id: str) -> tuple[str, str] | None:
    """The (certificate, key) saved for ``cluster_id``, or None when they are not on this machine."""
    folder = certs_root() / cluster_id
    try:
        return (folder / _CERT).read_text(), (folder / _KEY).read_text()
    except OSError:
        return None


def remove(cluster_id: str) -> None:
    """Delete the pair of ``cluster_id`` (once its gateway cluster is confirmed stopped)."""
    shutil.rmtree(certs_root() / cluster_id, ignore_errors=True)


def from_gateway(record: ClusterRecord) -> tuple[str, str]:
    """The (certificate, key) of ``record``'s gateway cluster as its gateway gives them to their owner.

    Blocking (:func:`cumulo.aio.blocking`: callers may be inside a running loop);
    CredentialsError when the gateway has none to give (the cluster is not running).
    """
    address, name = record.spec.get("address"), (record.address or "").rsplit("/", 1)[-1]
    if not address or not name:
        raise CredentialsError(f"cluster {record.name!r} has no recorded gateway cluster to fetch credentials "
                               f"for; stop it with `cumulo down {record.name}` and start a new one")
    target = api.target_of(address)

    async def fetch() -> tuple[str, str]:
        async with api.session(target) as gateway:
            state = await gateway.report(name)
        if state is None or not state.tls_cert or not state.tls_key:
            status = "unknown to it" if state is None else state.status.name.lower()
            raise CredentialsError(f"the dask-gateway at {target.address} gives no credentials for cluster {name} "
                                   f"({status}); stop it with `cumulo down {record.name}`")
        return state.tls_cert, state.tls_key

    return blocking(fetch())
