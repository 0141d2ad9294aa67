"""Worker preload of local workers: no provider secrets, a kernel interrupt does not kill them, and
TLS connections they accept do not load the system's CA store (accepted_tls_keeps_its_context).

Interrupting a Jupyter kernel sends SIGINT to the kernel's whole process
group, local worker processes included: by default they died of it, losing
their data, on every "interrupt kernel". ``dask_setup`` makes the worker
process ignore SIGINT (its nanny stops it with SIGTERM and SIGKILL, never
SIGINT), so an interrupt stops the cell's Python code, not the cluster.

Secrets.

Local workers are processes spawned by the notebook's kernel, so they start
with its environment, LAMBDA_API_KEY included. Distributed's nanny can add
variables to a worker's environment but never remove one, so local clusters
load this file as a worker preload (see local_security.worker_scrub_options).
Its ``dask_setup`` runs inside every worker process after the worker listens
and before it registers with the scheduler, so no task ever runs with the
secrets present. It

  - deletes every variable whose name matches one of the given patterns
    (fnmatch, case-sensitive) from ``os.environ``, hence from what any child
    process of the worker inherits;
  - on Linux, also blanks those entries in the process's initial environment
    block, which is what ``/proc/<pid>/environ`` shows and which unsetenv()
    leaves in place.

It is loaded by path, not as ``cumulo.security._local_worker``, and imports nothing
of cumulo: importing it does nothing; only ``dask_setup(worker)`` acts.
"""

from __future__ import annotations

import ctypes
import fnmatch
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any

import click

__all__ = ["accepted_tls_keeps_its_context", "dask_setup", "ignore_interrupts", "scrub"]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _blank_initial_environ(patterns: list[str]) -> int:
    """Overwrite matching ``NAME=value`` entries of the initial environment block with zero bytes.

    The block lies between the kernel-reported env_start and env_end (fields 50
    and 51 of /proc/self/stat); nothing else points into an entry once its
    variable has been unset. Every write is checked against the bytes read back
    first, so a layout this code does not expect leaves memory untouched.
    Returns how many entries were blanked.
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/stat", "rb") as f:
            raw = f.read()
        fields = raw[raw.rindex(b")") + 2:].split()
        start, end = int(fields[47]), int(fields[48])
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
    except (OSError, ValueError, IndexError):
        return 0
    if not start or end - start < len(block):
        return 0
    blanked, offset = 0, 0
    for entry in block.split(b"\0"):
        name = entry.split(b"=", 1)[0].decode("utf-8", "surrogateescape")
        if entry and b"=" in entry and _matches(name, patterns):
            address = start + offset
            if ctypes.string_at(address, len(entry)) == entry:
                ctypes.memset(address, 0, len(entry))
                blanked += 1
        offset += len(entry) + 1
    return blanked


def scrub(patterns: Iterable[str]) -> list[str]:
    """Remove the variables matching ``patterns`` from this process; return the names removed."""
    patterns = [p for p in patterns if p]
    removed = sorted(name for name in list(os.environ) if _matches(name, patterns))
    for name in removed:
        os.environ.pop(name, None)
    try:
        _blank_initial_environ(patterns)
    except Exception:  # never let the extra step stop the removal above from counting
        pass
    return removed


@click.command()
@click.argument("patterns", nargs=-1)
def dask_setup(worker: Any, patterns: tuple[str, ...]) -> None:
    """Preload entry point: ``patterns`` come from the preload's argv (local_security)."""
    scrub(patterns)
    ignore_interrupts()
    accepted_tls_keeps_its_context()


def accepted_tls_keeps_its_context() -> bool:
    """Let a TLS stream that a tornado server accepts carry the context its socket was wrapped with.

    tornado's TCPServer wraps each accepted socket with the server's own SSLContext, then
    builds the SSLIOStream without ``ssl_options``; the stream therefore makes tornado's
    default *client* context, which loads the system's whole CA store (about 40 ms of CPU,
    once per process) and is never used: the socket already speaks TLS, and a stream
    uses its options only to wrap a socket it connects itself. Every process of a local
    TLS cluster (the scheduler's, each worker) paid that on its first accepted connection,
    the workers on connect()'s first round trip to them. Handing the stream the socket's
    own context changes nothing else: the handshake, the certificates required and their
    checks are the server context's, as before. Idempotent; False where tornado has no
    such class (nothing is changed then).
    """
    import ssl

    try:
        from tornado import iostream, tcpserver
    except ImportError:
        return False
    accepted = getattr(tcpserver, "SSLIOStream", None)
    if not isinstance(accepted, type) or not issubclass(accepted, iostream.SSLIOStream):
        return False
    if getattr(accepted, "keeps_socket_context", False):
        return True

    class AcceptedSSLIOStream(accepted):  # type: ignore[misc, valid-type]
        keeps_socket_context = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            sock = args[0] if args else kwargs.get("socket")
            if kwargs.get("ssl_options") is None and isinstance(sock, ssl.SSLSocket):
                kwargs["ssl_options"] = sock.context
            super().__init__(*args, **kwargs)

    tcpserver.SSLIOStream = AcceptedSSLIOStream  # type: ignore[misc]
    return True


def ignore_interrupts() -> bool:
    """Ignore SIGINT in this worker process (see the module docstring); False where it cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return True
