"""The first-boot script of a cloud instance: start a TLS Dask scheduler or GPU worker on it.

``user_data(...)`` returns a bash script that cloud-init runs once when the
instance boots. It

1. writes this cluster's CA and the role's certificate and key under
   ``$CUMULO_ROOT/tls`` (mode 600; the script itself runs with ``umask 077``);
2. installs the notebook's environment (cumulo.envsync's lock, embedded
   gzip+base64: the client's pins, mapped to RAPIDS/CUDA builds on GPU workers)
   with uv into a venv of its own; with ``environment="none"`` only dask and
   distributed pinned to the client's versions (and dask-cuda for GPU
   workers), in a venv that still sees the image's packages; nothing when
   installing was turned off in config. Local packages (cumulo itself during
   development) are not in the script: the client sends them over the
   cluster's TLS link once the scheduler answers (envsync.ship_wheels);
3. on workers, runs a GPU probe (``nvidia-smi -L`` must list a GPU) before the
   worker may join; with the probe turned off it says so in its log, never
   silently;
4. starts ``dask scheduler --protocol tls`` (head) and/or the worker command
   (``dask cuda worker`` by default) with the cluster's certificates, in the
   background, logging to ``$CUMULO_ROOT/bootstrap.log``;
5. where the cloud asks for it (``power_off``), powers the instance off once
   that dask process exits: the head's scheduler after its idle timeout, a
   worker after its scheduler has been gone for ``worker-death-timeout``;
6. where the cloud can take instances back (``notice``: spot), runs a watcher
   (notice_watch.py, embedded) that retires the instance's workers through
   dask's ``retire_workers`` on the cloud's notice and reports it to the
   notebook (cumulo.life.interruptions);
7. where the head powers itself off, loads a lease switch into its scheduler
   (lease_switch.py): no client heard from for the lease, and the scheduler
   stops, so a cluster whose kernel went away ends its own bill.

Two environment variables let a test harness run the same script on one
machine: ``CUMULO_ROOT`` (default /opt/cumulo) and ``CUMULO_BIND_HOST`` (the
address to listen on; by default all interfaces for the scheduler and the
interface facing the scheduler for workers). Only the scheduler's TLS port
faces the network: the scheduler's and the workers' dashboards (plain HTTP,
no authentication) listen on the instance's loopback only; reach them through
``ssh -L 8787:localhost:8787``. ``CUMULO_DASHBOARD_PORT`` changes the
scheduler dashboard's port (the test harness uses 0: any free port), never
its address.
"""

from __future__ import annotations

import base64
import gzip
import shlex
from dataclasses import dataclass
from pathlib import Path

import dask
import distributed

from ...exceptions import SpecError
from ...security.tlscerts import ClusterTLS

__all__ = ["MAX_USER_DATA", "BootstrapOptions", "user_data"]

#: Cloud user-data limit (AWS's, the smallest of the providers cumulo targets): the script must fit.
MAX_USER_DATA = 16 * 1024

_EOF = "CUMULO_PEM_EOF"
#: dask-cuda for GPU workers: the RAPIDS release whose dask pin matches cumulo's core dask range.
DASK_CUDA = "dask-cuda[cu12]>=26.10,<26.12"
#: Where the dashboards listen on an instance: never a public interface (they have no TLS, no login).
LOOPBACK = "127.0.0.1"
#: The programs the script carries (notice_watch.py, lease_switch.py) live beside this module.
_HERE = Path(__file__).parent


@dataclass(frozen=True)
class BootstrapOptions:
    """How instances are prepared; built from ``cumulo.cloud.*`` config (see cumulo.yaml)."""

    scheduler_port: int = 8786
    worker_command: str = "dask cuda worker"
    worker_args: str = ""
    gpu_probe: bool = True
    install_packages: bool = True
    python: str = "python3"
    death_timeout: int = 300
    #: The environment's pins, envsync.compact(...) of the CPU and the GPU lock (None: the minimal install).
    requirements: str | None = None
    gpu_requirements: str | None = None
    find_links: tuple[str, ...] = ()
    #: The scheduler stops by itself after this many seconds without work (``dask scheduler
    #: --idle-timeout``): the last resort when no cumulo process is left to enforce the idle timeout.
    idle_timeout: float | None = None
    #: Run when the instance's own dask process (the scheduler on the head, the worker elsewhere) has exited
    #: (None: nothing): a cloud whose powered-off instances stop billing (AWS: shutdown behaviour
    #: ``terminate``) sets ``shutdown -h now``, so an idle head or an orphaned worker ends its own bill.
    power_off: str | None = None
    #: The cloud's ``instance_id()``/``notice()`` source (the adapter's ``notice``): with it, instances that run
    #: a worker watch for the cloud taking them back (notice_watch.py) every ``notice_poll`` seconds.
    notice: str | None = None
    notice_poll: float = 5.0
    #: The head's scheduler stops when no client has been heard from for this many seconds (lease_switch.py,
    #: a --preload), counted from ``client_lease_start`` seconds after it starts; None: never. Only where the
    #: head then powers itself off and stops billing (``power_off``).
    client_lease: float | None = None
    client_lease_start: float = 0.0


def _heredoc(path: str, text: str) -> str:
    if _EOF in text:
        raise ValueError("certificate text contains the heredoc marker")
    return f'cat > "{path}" <<\'{_EOF}\'\n{text.rstrip()}\n{_EOF}\nchmod 600 "{path}"\n'


def _install(opts: BootstrapOptions, *, gpu_worker: bool) -> str:
    if not opts.install_packages:
        return 'echo "cumulo: package install disabled by configuration (cumulo.cloud.install-packages=false)"\n'
    locked = opts.gpu_requirements if gpu_worker and opts.gpu_requirements else opts.requirements
    if locked is not None:
        return _install_lock(opts, locked, gpu_worker=gpu_worker)
    pkgs = [f"dask=={dask.__version__}", f"distributed=={distributed.__version__}"]
    if gpu_worker:
        pkgs.append(DASK_CUDA)
    # A venv that still sees the image's packages (CUDA, torch): pins without touching the system Python,
    # which newer Ubuntu images refuse to pip-install into (PEP 668).
    return (
        f'echo "cumulo: installing {" ".join(pkgs)} into $CUMULO_ROOT/venv"\n'
        f'{shlex.quote(opts.python)} -m venv --system-site-packages "$CUMULO_ROOT/venv"\n'
        f'"$CUMULO_ROOT/venv/bin/python" -m pip install --quiet {" ".join(shlex.quote(p) for p in pkgs)}\n'
        'export PATH="$CUMULO_ROOT/venv/bin:$PATH"\n'
    )


def _install_lock(opts: BootstrapOptions, locked: str, *, gpu_worker: bool) -> str:
    """uv (from the index, into a venv of its own), then the lock into $CUMULO_ROOT/venv; timed in the log."""
    py = shlex.quote(opts.python)
    links = "".join(f" --find-links {shlex.quote(link)}" for link in opts.find_links)
    kind = "GPU" if gpu_worker else "CPU"
    return (
        f'echo "cumulo: installing the notebook\'s environment ({kind} lock) into $CUMULO_ROOT/venv"\n'
        't0=$(date +%s)\n'
        f'{py} -m venv "$CUMULO_ROOT/uv"\n'
        '"$CUMULO_ROOT/uv/bin/python" -m pip install --quiet uv\n'
        f"echo '{locked}' | base64 -d | gunzip > \"$CUMULO_ROOT/requirements.txt\"\n"
        f'"$CUMULO_ROOT/uv/bin/uv" venv --seed -q -p {py} "$CUMULO_ROOT/venv"\n'
        f'"$CUMULO_ROOT/uv/bin/uv" pip install -q -p "$CUMULO_ROOT/venv/bin/python"{links} '
        '-r "$CUMULO_ROOT/requirements.txt"\n'
        'echo "cumulo: environment installed in $(( $(date +%s) - t0 ))s"\n'
        'export PATH="$CUMULO_ROOT/venv/bin:$PATH"\n'
    )


def _probe(opts: BootstrapOptions) -> str:
    if not opts.gpu_probe:
        return 'echo "cumulo: GPU probe disabled by configuration (cumulo.cloud.gpu-probe=false)"\n'
    return (
        "if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L | grep -q '^GPU '; then\n"
        '  echo "cumulo: GPU probe passed: $(nvidia-smi -L | wc -l) GPU(s)"\n'
        "else\n"
        '  echo "cumulo: GPU probe FAILED: nvidia-smi lists no GPU; this worker will not join"\n'
        "  exit 3\n"
        "fi\n"
    )


def _power_off(command: str) -> str:
    """Power the instance off once its main dask process has exited (an idle scheduler, an orphaned worker).

    ``CUMULO_POWEROFF`` replaces the command where a test harness runs instances as local processes.
    """
    watch = ('while kill -0 "$0" 2>/dev/null; do sleep "${CUMULO_POWEROFF_POLL:-5}"; done; '
             'echo "cumulo: dask exited at $(date -u +%FT%TZ): powering off"; eval "$1"')
    return (f'nohup bash -c {shlex.quote(watch)} "$MAIN_PID" "${{CUMULO_POWEROFF:-{command}}}" '
            '>>"$CUMULO_ROOT/bootstrap.log" 2>&1 &\n'
            'echo "cumulo: this instance powers itself off when its dask process exits"')


def _packed(source: str) -> str:
    """A program's source as gzip+base64 text for the script (``echo ... | base64 -d | gunzip``): about a
    third of its size against the user-data limit, and no quoting to get wrong."""
    return base64.b64encode(gzip.compress(source.encode(), mtime=0)).decode()


def _lease_switch(opts: BootstrapOptions) -> str:
    """Write the scheduler's lease switch (a dask preload) and its lease; see lease_switch.py."""
    packed = _packed(_HERE.joinpath("lease_switch.py").read_text())
    return (f'echo {packed} | base64 -d | gunzip > "$CUMULO_ROOT/lease_switch.py"\n'
            f"export CUMULO_CLIENT_LEASE={opts.client_lease:g} CUMULO_CLIENT_LEASE_START={opts.client_lease_start:g}\n"
            f'echo "cumulo: the scheduler stops when no client is heard from for {opts.client_lease:g} s"')


def _notice_watch(opts: BootstrapOptions, *, scheduler: str, cert_role: str) -> str:
    """Start the watcher that retires this instance's workers when the cloud takes it back (spot)."""
    assert opts.notice is not None
    packed = _packed(opts.notice + "\n" + _HERE.joinpath("notice_watch.py").read_text())
    return (f'nohup python3 -c "$(echo {packed} | base64 -d | gunzip)" {scheduler} "$CUMULO_ROOT/tls" '
            f'{cert_role} "$WORKER_NAME" {opts.notice_poll:g} >>"$CUMULO_ROOT/notice.log" 2>&1 &\n'
            'echo "cumulo: watching for the cloud\'s interruption notice (log: $CUMULO_ROOT/notice.log)"')


def user_data(
    role: str,
    *,
    cluster_id: str,
    tls: ClusterTLS,
    scheduler_host: str | None = None,
    options: BootstrapOptions | None = None,
) -> str:
    """The cloud-init script for one instance.

    role: "head" (scheduler, plus a worker on the same machine), "scheduler"
    (scheduler only) or "worker". Workers need ``scheduler_host``, the head's
    private address. The script contains the role's TLS key: treat it as a secret
    (cumulo never logs or stores it).
    """
    if role not in ("head", "scheduler", "worker"):
        raise ValueError(f"role must be 'head', 'scheduler' or 'worker', not {role!r}")
    if role == "worker" and not scheduler_host:
        raise ValueError("a worker bootstrap needs scheduler_host")
    opts = options or BootstrapOptions()
    cert_role = "worker" if role == "worker" else "scheduler"
    ca, cert, key = tls.pem(cert_role)
    runs_worker = role in ("head", "worker")
    gpu_worker = runs_worker and "cuda" in opts.worker_command
    lines = [
        "#!/bin/bash",
        f"# cumulo bootstrap for cluster {cluster_id}, role {role}. Generated; holds this cluster's TLS key.",
        "set -euo pipefail",
        "umask 077",
        'CUMULO_ROOT="${CUMULO_ROOT:-/opt/cumulo}"',
        'mkdir -p "$CUMULO_ROOT/tls"',
        'exec >>"$CUMULO_ROOT/bootstrap.log" 2>&1',
        f'echo "cumulo: bootstrap of {role} for cluster {cluster_id} starting at $(date -u +%FT%TZ)"',
        _heredoc("$CUMULO_ROOT/tls/ca.pem", ca),
        _heredoc(f"$CUMULO_ROOT/tls/{cert_role}.pem", cert),
        _heredoc(f"$CUMULO_ROOT/tls/{cert_role}-key.pem", key),
        f'TLS="--tls-ca-file $CUMULO_ROOT/tls/ca.pem --tls-cert $CUMULO_ROOT/tls/{cert_role}.pem '
        f'--tls-key $CUMULO_ROOT/tls/{cert_role}-key.pem"',
        'HOST_ARGS="${CUMULO_BIND_HOST:+--host $CUMULO_BIND_HOST}"',
        _install(opts, gpu_worker=gpu_worker),
    ]
    port = int(opts.scheduler_port)
    idle = f" --idle-timeout {opts.idle_timeout:.0f}s" if opts.idle_timeout else ""
    if role in ("head", "scheduler"):
        preload = ""
        if opts.client_lease:
            lines.append(_lease_switch(opts))
            preload = ' --preload "$CUMULO_ROOT/lease_switch.py"'
        lines.append(
            f"nohup dask scheduler --protocol tls --port {port} $HOST_ARGS $TLS{idle}{preload} "
            f'--dashboard-address "{LOOPBACK}:${{CUMULO_DASHBOARD_PORT:-8787}}" &\n'
            'MAIN_PID=$!\necho "cumulo: scheduler started (pid $MAIN_PID)"'
        )
    if runs_worker:
        target = "${CUMULO_BIND_HOST:-127.0.0.1}" if role == "head" else scheduler_host
        lines.append(_probe(opts))
        lines.append(
            # a name of its own, so that this instance's watcher can retire exactly its workers
            'WORKER_NAME="cumulo-$(od -An -N6 -tx1 /dev/urandom | tr -d \' \\n\')"\n'
            f'nohup {opts.worker_command} tls://{target}:{port} $HOST_ARGS $TLS --name "$WORKER_NAME" '
            f"--dashboard-address {LOOPBACK}:0 --death-timeout {int(opts.death_timeout)} {opts.worker_args} &\n"
            'WORKER_PID=$!\necho "cumulo: worker $WORKER_NAME started (pid $WORKER_PID)"\n'
            'MAIN_PID=${MAIN_PID:-$WORKER_PID}'
        )
        if opts.notice:
            lines.append(_notice_watch(opts, scheduler=f"tls://{target}:{port}", cert_role=cert_role))
    if opts.power_off:
        lines.append(_power_off(opts.power_off))
    lines.append('echo "cumulo: bootstrap done"')
    script = "\n".join(lines) + "\n"
    if len(script.encode()) > MAX_USER_DATA:
        raise SpecError(
            f"the first-boot script of the {role} is {len(script.encode())} bytes, over the {MAX_USER_DATA}-byte "
            "user-data limit: the environment has too many packages to embed. Pass environment=[...] with what "
            "the workers need, leave packages out with cumulo.env.exclude, or use environment='none' with a "
            "prepared image")
    return script
