"""Security of the clusters cumulo starts on this machine (the ``local`` provider).

A Dask scheduler runs whatever it is sent, and 127.0.0.1 is reachable by every
user of a shared machine. So a local cluster listens on ``tls://`` with mutual
TLS and credentials of its own: a fresh CA and scheduler/worker/client
certificates (tlscerts.py), whose CA key is thrown away. A connection that does
not present a certificate of that CA is refused at the handshake, before any
message is read.

The owning process holds the credentials in memory. So that the same user's
other processes can reach the cluster (another kernel re-attaching by name,
``cumulo down``, the Jupyter server, plain Dask tools), they are also written
to a folder only the user can enter::

    <certs root>/<cluster id>/       mode 700 (every file 600)
        ca.pem  client.pem  client-key.pem  scheduler*.pem  worker*.pem
        dask-client.yaml             distributed.comm.tls.* for a client
        owner.json                   host, pid and start time of the owner

The certs root is ``cumulo.local.certs-dir``, else a ``tls`` folder beside the
registry: ``<user data dir>/cumulo/tls``, the same folder tlscerts uses by
default. The folder is removed when the cluster closes or is stopped; one whose
owner process has died without closing (a killed kernel) is removed at the next
local start. ``cumulo.local.tls: false`` turns all of this off (plain tcp://,
for single-user machines).

Workers must also not hold the user's provider API keys: a task is arbitrary
code. Distributed's nanny can set a worker's environment variables but not
remove inherited ones, so every local worker loads ``_local_worker.py`` as a
preload, which deletes the secret variables before the worker registers with
the scheduler (see there). This is independent of TLS.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config
import yaml
from distributed.security import Security

from .. import config
from ..exceptions import ConfigError, CredentialsError, SpecError
from ..providers import provider_classes
from ._local_worker import accepted_tls_keeps_its_context
from .tlscerts import ClusterTLS, create_cluster_tls, load_cluster_tls

__all__ = [
    "OWNER_FILE",
    "CLIENT_CONFIG_FILE",
    "certs_root",
    "check_worker_env",
    "client_config",
    "client_security",
    "create_local_tls",
    "provider_secret_env",
    "prune_stale",
    "remove_local_tls",
    "scrub_patterns",
    "tls_enabled",
    "worker_scrub_options",
]

#: Marks a certificate folder as a local cluster's, and says which process owns it.
OWNER_FILE = "owner.json"
#: ``distributed.comm.*`` settings for a client of the cluster, for any Dask tool of this user.
CLIENT_CONFIG_FILE = "dask-client.yaml"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: The worker preload that removes the secret variables.
_SCRUB_SCRIPT = Path(__file__).with_name("_local_worker.py")


# -- TLS -------------------------------------------------------------------------------------


def tls_enabled() -> bool:
    """Whether local clusters use TLS (``cumulo.local.tls``, default true).

    Only an explicit false (or "false"/"no"/"off"/0, as environment variables
    spell it) turns it off; anything unreadable is a ConfigError, never plain tcp.
    """
    value = config.get("local.tls", True)
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("false", "no", "off", "0"):
        return False
    if word in ("true", "yes", "on", "1", "none", ""):
        return True
    raise ConfigError(f"cumulo.local.tls must be true or false, not {value!r}")


def certs_root() -> Path:
    """The folder under which each local cluster's certificate folder lives.

    ``cumulo.local.certs-dir`` when set, else ``tls`` beside the registry: the
    user data dir by default, and a test's or project's own folder when the
    registry was moved there (its clusters' keys then move with it).
    """
    configured = config.get("local.certs-dir")
    if configured:
        return Path(configured).expanduser()
    return config.path_of_registry().parent / "tls"


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def create_local_tls(cluster_id: str) -> Security:
    """Write fresh credentials for ``cluster_id`` and return the Security the cluster runs with.

    The returned Security holds the scheduler, worker and client certificates
    in memory (for an in-process scheduler, its worker processes and this
    process's client), so the running cluster does not depend on the files;
    the files serve other processes. Removes stale folders first.
    CredentialsError if the certs root is not private to the user.
    """
    prune_stale()
    _folder(cluster_id)
    # the scheduler and nannies in this process accept TLS: without this, their first accepted
    # connection loads the system CA store for nothing (the workers do the same in their preload)
    accepted_tls_keeps_its_context()
    try:
        tls = create_cluster_tls(cluster_id, directory=certs_root())
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_started(os.getpid())}
        _write_private(tls.directory / OWNER_FILE, json.dumps(owner))
        _write_private(tls.directory / CLIENT_CONFIG_FILE, yaml.safe_dump(_nested(tls.dask_config("client"))))
        return tls.security_for(("scheduler", "worker", "client"), in_memory=True)
    except BaseException:
        remove_local_tls(cluster_id)
        raise


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}, as dask reads YAML config."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _cluster_tls(cluster_id: str) -> ClusterTLS:
    _folder(cluster_id)
    return load_cluster_tls(cluster_id, directory=certs_root())


def client_security(cluster_id: str) -> Security:
    """The client Security with which any process of this user reaches local cluster ``cluster_id``.

    CredentialsError when its folder is not here (the cluster was closed, or
    started on another machine or with another certs root).
    """
    try:
        return _cluster_tls(cluster_id).security("client")
    except CredentialsError:
        raise CredentialsError(
            f"no TLS credentials for local cluster {cluster_id} under {certs_root()}: it was closed, or started "
            "by another user, on another machine, or with another cumulo.local.certs-dir / registry"
        ) from None


def client_config(cluster_id: str) -> dict[str, Any]:
    """``distributed.comm.*`` settings that let any Dask client of this user reach the cluster::

        with dask.config.set(cumulo.security.local_security.client_config(cluster_id)):
            client = distributed.Client(address)
    """
    return _cluster_tls(cluster_id).dask_config("client")


def _folder(cluster_id: str) -> Path:
    if not _ID.fullmatch(cluster_id) or cluster_id in (".", ".."):
        raise SpecError(f"not a cluster id: {cluster_id!r}")
    return certs_root() / cluster_id


def remove_local_tls(cluster_id: str) -> None:
    """Delete the credentials of ``cluster_id`` (after it stopped); nothing happens if none are here.

    Only a real folder owned by the user is removed (never what a link points to).
    """
    folder = _folder(cluster_id)
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode) and (not hasattr(os, "getuid") or info.st_uid == os.getuid()):
        shutil.rmtree(folder, ignore_errors=True)


def prune_stale() -> list[str]:
    """Remove local cluster folders whose owner process on this host has exited; return their ids.

    Only folders with an owner file are considered, so other providers'
    certificates sharing the root are never touched, nor are folders of
    processes on other hosts sharing a home directory.
    """
    root = certs_root()
    removed: list[str] = []
    if not root.is_dir():
        return removed
    host = socket.gethostname()
    for folder in root.iterdir():
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            owner = json.loads((folder / OWNER_FILE).read_text())
            if owner["host"] != host:
                continue
            started = _process_started(int(owner["pid"]))
            recorded = owner.get("started")
            alive = started is not None and (recorded is None or abs(started - float(recorded)) < 1.0)
            if not alive:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
    return removed


# -- worker environments ---------------------------------------------------------------------


def provider_secret_env() -> tuple[str, ...]:
    """The environment variables that hold provider credentials: every provider's declared ones
    (``Provider.credentials``, built in or installed), always removed from workers."""
    return tuple(dict.fromkeys(c.env_var for cls in provider_classes() for c in cls.credentials))


def scrub_patterns() -> tuple[str, ...]:
    """Names (fnmatch patterns) of variables no local worker may see.

    The provider credentials always, plus ``cumulo.local.scrub-env``.
    """
    extra = config.get("local.scrub-env") or []
    if isinstance(extra, str):
        extra = [extra]
    return tuple(dict.fromkeys([*provider_secret_env(), *(str(p) for p in extra if p)]))


def check_worker_env(env: Mapping[str, str] | None) -> None:
    """Refuse ``connect(env=...)`` that would hand a provider secret to workers (SpecError)."""
    patterns = scrub_patterns()
    bad = sorted(k for k in (env or {}) if any(fnmatch.fnmatchcase(k, p) for p in patterns))
    if bad:
        raise SpecError(
            f"env= would give workers {', '.join(bad)}; local workers never receive provider credentials "
            "(cumulo.local.scrub-env). Use the key in this notebook only, or pass what the task needs instead."
        )


def worker_scrub_options() -> dict[str, Any]:
    """``preload``/``preload_argv`` for (CUDA)LocalCluster: the scrub first, then the user's own preloads.

    Explicit arguments replace the ``distributed.worker.preload*`` config in the
    nanny, so that config is carried over here.
    """
    user = dask.config.get("distributed.worker.preload", default=[]) or []
    user = [user] if isinstance(user, str) else list(user)
    argv = dask.config.get("distributed.worker.preload-argv", default=[]) or []
    if argv and isinstance(argv[0], str):
        user_argv = [list(argv)] * len(user)
    elif argv:
        user_argv = [list(a) for a in argv]
    else:
        user_argv = [[] for _ in user]
    return {
        "preload": [str(_SCRUB_SCRIPT), *user],
        "preload_argv": [["--", *scrub_patterns()], *user_argv],
    }
