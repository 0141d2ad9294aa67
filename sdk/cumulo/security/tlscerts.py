"""Per-cluster TLS: a fresh CA and certificates for the scheduler, the workers and this client.

A Dask scheduler runs whatever it is sent, so a remote cluster is reached only
over mutual TLS with certificates nobody else holds (the scheme dask-gateway
uses). For each cluster cumulo makes a new CA, signs one certificate per role,
then throws the CA's private key away: no further certificate can be minted
for that cluster, and one cluster's credentials open no other cluster.

Files live under ``<user data dir>/cumulo/tls/<cluster id>/`` (override with
``directory=``), the directory mode 700 and every file mode 600. They are never
written to the registry. The scheduler's and workers' keys travel to the
instances inside their bootstrap (see bootstrap.py); the client key stays here.
Local clusters (local_security.py) use the same files for the same reason.

The folders are checked before anything is written into them: a certificate
folder must be a real directory owned by the user, and its parent must not let
other users swap it (owned by the user, or sticky like /tmp).
"""

from __future__ import annotations

import datetime
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from distributed.security import Security

from ..exceptions import CredentialsError

__all__ = ["ROLES", "ClusterTLS", "create_cluster_tls", "default_directory", "load_cluster_tls", "private_folder",
           "remove_cluster_tls"]

#: Certificate roles: the scheduler, every worker, and the user's client.
ROLES = ("scheduler", "worker", "client")


def default_directory() -> Path:
    """Where per-cluster certificates live unless told otherwise: the user data dir's ``tls`` folder."""
    import platformdirs

    return Path(platformdirs.user_data_dir("cumulo", appauthor=False)) / "tls"


@dataclass(frozen=True)
class ClusterTLS:
    """The certificate files of one cluster. Holds paths only, so it is safe to show."""

    cluster_id: str
    directory: Path

    def cert_file(self, role: str) -> Path:
        """PEM certificate of ``role`` (scheduler, worker or client)."""
        return self.directory / f"{role}.pem"

    def key_file(self, role: str) -> Path:
        """PEM private key of ``role``."""
        return self.directory / f"{role}-key.pem"

    @property
    def ca_file(self) -> Path:
        """The cluster CA's certificate (its private key was discarded after signing)."""
        return self.directory / "ca.pem"

    def pem(self, role: str) -> tuple[str, str, str]:
        """(CA certificate, certificate, key) of ``role`` as text, for a bootstrap script."""
        return self.ca_file.read_text(), self.cert_file(role).read_text(), self.key_file(role).read_text()

    def security(self, role: str = "client") -> Security:
        """A ``distributed.security.Security`` for ``role`` that refuses unencrypted links."""
        return self.security_for([role])

    def security_for(self, roles: Iterable[str], *, in_memory: bool = False) -> Security:
        """One Security holding the certificates of several ``roles`` (e.g. an in-process scheduler
        with its workers and client), refusing unencrypted links.

        ``in_memory`` loads the PEM text instead of naming the files, so that
        whoever holds the object keeps working if the folder is removed.
        """
        roles = list(roles)
        for role in roles:
            if role not in ROLES:
                raise ValueError(f"unknown TLS role {role!r}; one of {', '.join(ROLES)}")
        self._require([self.ca_file, *(p for r in roles for p in (self.cert_file(r), self.key_file(r)))])

        def value(path: Path) -> str:
            return path.read_text() if in_memory else str(path)

        kwargs = {"tls_ca_file": value(self.ca_file)}
        for role in roles:
            kwargs[f"tls_{role}_cert"] = value(self.cert_file(role))
            kwargs[f"tls_{role}_key"] = value(self.key_file(role))
        return Security(require_encryption=True, **kwargs)

    def dask_config(self, role: str = "client") -> dict[str, Any]:
        """The ``distributed.comm.*`` settings with which any Dask process of this user reaches
        the cluster as ``role`` (for ``dask.config.set`` or a YAML file in a DASK_CONFIG folder)."""
        self._require([self.ca_file, self.cert_file(role), self.key_file(role)])
        return {
            "distributed.comm.require-encryption": True,
            "distributed.comm.tls.ca-file": str(self.ca_file),
            f"distributed.comm.tls.{role}.cert": str(self.cert_file(role)),
            f"distributed.comm.tls.{role}.key": str(self.key_file(role)),
        }

    def _require(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if not path.exists():
                raise CredentialsError(
                    f"the TLS file {path} of cluster {self.cluster_id} is missing; the cluster cannot be reached "
                    "securely from here. Stop it with `cumulo down` and start a new one."
                )


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cumulo"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def create_cluster_tls(
    cluster_id: str, *, directory: str | os.PathLike[str] | None = None, valid_days: int = 30
) -> ClusterTLS:
    """Make a CA and scheduler/worker/client certificates for ``cluster_id``; return their files.

    ``valid_days`` bounds how long a leaked certificate is good for; a cluster
    living longer needs new certificates (and a restart).
    """
    root = Path(directory) if directory is not None else default_directory()
    folder = private_folder(root, cluster_id)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"cumulo-{cluster_id}-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    tls = ClusterTLS(cluster_id, folder)
    _write_private(tls.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"cumulo-{cluster_id}-{role}")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"cumulo-{cluster_id}-{role}")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(tls.cert_file(role), cert.public_bytes(serialization.Encoding.PEM))
        _write_private(tls.key_file(role), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
    del ca_key  # never stored: nothing more can be signed for this cluster
    return tls


def _refuse(path: Path, why: str) -> CredentialsError:
    return CredentialsError(
        f"refusing to keep TLS keys in {path}: {why}. Choose a folder only you can write "
        "(the provider's certs-dir setting, e.g. cumulo.local.certs-dir or cumulo.lambda.certs-dir), or fix its "
        "owner and mode."
    )


def private_folder(root: str | os.PathLike[str], name: str) -> Path:
    """``root/name`` as a directory only this user can enter (mode 700), made if missing.

    ``root`` is created mode 700 when missing; when it exists it must be owned
    by the user or be sticky (like /tmp), so that no other user can replace
    ``name`` under it. ``name`` must be a real directory owned by the user.
    CredentialsError otherwise.
    """
    root = Path(root)
    if not root.exists():
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = root.stat()
    mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(root, "it is not a directory")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise _refuse(root, f"other users may write it (mode {stat.filemode(info.st_mode)})")
    if not mine and not info.st_mode & stat.S_ISVTX:
        raise _refuse(root, f"it belongs to another user (uid {info.st_uid})")
    folder = root / name
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(folder, "it is not a directory (a symbolic link?)")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise _refuse(folder, f"it belongs to another user (uid {info.st_uid})")
    os.chmod(folder, 0o700)
    return folder


def load_cluster_tls(cluster_id: str, *, directory: str | os.PathLike[str] | None = None) -> ClusterTLS:
    """The certificate files of an existing cluster; CredentialsError if they are not on this machine."""
    root = Path(directory) if directory is not None else default_directory()
    tls = ClusterTLS(cluster_id, root / cluster_id)
    if not tls.ca_file.exists():
        raise CredentialsError(
            f"no TLS certificates for cluster {cluster_id} under {root}: it was started on another machine "
            "or its files were removed. Stop it with `cumulo down` (which needs only the API key) and start a new one."
        )
    return tls


def remove_cluster_tls(cluster_id: str, *, directory: str | os.PathLike[str] | None = None) -> None:
    """Delete a cluster's certificates (after it is confirmed stopped)."""
    root = Path(directory) if directory is not None else default_directory()
    shutil.rmtree(root / cluster_id, ignore_errors=True)
