"""``ssh://`` hosts you can log in to, as a cumulo provider.

The scheduler runs on the first host and one worker per host (``dask cuda
worker`` where the host has GPUs and the environment has dask-cuda), each a
detached process that outlives the kernel: re-attach by name, stop with
`cumulo down`. The hosts get the notebook's environment (envsync, one venv per
lock, reused), and the link is mutual TLS with certificates made for this
cluster (tlscerts): the scheduler and workers' keys travel over the SSH
connection (an exec channel, no SFTP needed) into a mode-700 folder on each
host, the client's stay here. The scheduler is started
with ``--idle-timeout``, so a cluster nobody uses stops even if no cumulo
process is left to reap it; the kernel lease and budget stop it through the
lifecycle like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dask.utils import parse_timedelta
from distributed.security import Security

from ... import config, envsync
from ...aio import until
from ...exceptions import CumuloError, LaunchTimeout, ProviderError, SpecError, TerminateError
from ...life.registry import ClusterRecord, ResourceRecord
from ...security.tlscerts import ClusterTLS, create_cluster_tls, load_cluster_tls, remove_cluster_tls
from ...spec import ClusterSpec
from ..base import Deployment, Provider, Say, shutdown_scheduler
from . import environment, remote
from .session import Session, open_session, open_sessions
from .target import Host, parse_target

if TYPE_CHECKING:
    from ...life.checkpoint import Checkpoint

__all__ = ["SSHProvider"]

logger = logging.getLogger("cumulo.ssh")
_SCHEDULER_WAIT_S = 60.0


def _certs_dir() -> str | None:
    return config.get("ssh.certs-dir") or None


class SSHProvider(Provider):
    """Dask on your own hosts over SSH (see the module docstring)."""

    name = "ssh"
    lives_in_owner_process = False
    #: the sidebar's New cluster form takes the hosts target; the server logs in as its own user would with
    #: `ssh` (its SSH agent, ~/.ssh or cumulo.ssh.key-file), checking known_hosts as from a notebook
    launchable_from_server = True
    owns_scheduler = True
    #: processes on the hosts outlive an unreachable scheduler: only a confirmed stop closes the row
    bills_independently = True
    can_scale = False

    def _say(self, message: str, checkpoint: Checkpoint | None = None) -> None:
        """A progress line (to the log, the caller's callback or stderr), also kept in the cluster's events."""
        Say(self.progress, echo=True, logger=logger)(message)
        if checkpoint is not None:
            checkpoint.event("progress", message)

    async def preflight(self, spec: ClusterSpec) -> None:
        if not spec.address:
            raise SpecError("the ssh provider needs hosts: cumulo.connect('ssh://user@gpu1,gpu2')")
        parse_target(spec.address)
        env = spec.environment
        if isinstance(env, str) and env not in ("sync", "none") and not Path(env).is_file():
            raise SpecError(f"environment={env!r}: no such requirements file (or use 'sync' / 'none')")
        if spec.gpu is not None or spec.instance_type is not None:
            raise SpecError("ssh:// hosts are what they are: leave out gpu= and instance_type= (GPUs are found)")

    def security(self, record: ClusterRecord) -> Security:
        if self.user_security is not None:
            return self.user_security
        return load_cluster_tls(record.id, directory=_certs_dir()).security("client")

    # -- launch ------------------------------------------------------------------------

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        assert spec.address is not None
        hosts = parse_target(spec.address)
        sessions: list[Session] = []
        tls: ClusterTLS | None = None
        try:
            sessions = await open_sessions(hosts)  # all or none: a host that fails closes the others
            python = str(config.get("ssh.python"))
            facts = list(await asyncio.gather(*(remote.probe(s, python) for s in sessions)))
            for s, f in zip(sessions, facts):  # recorded before anything runs there: stop() needs only this
                checkpoint.resource("ssh-host", f"{s.host.label}/{cluster_id}", state="preparing",
                                    meta={"host": s.host.host, "port": s.host.port, "user": s.host.user,
                                          "python": f.executable})
            pythons = await self._environment(spec, sessions, facts, checkpoint)
            tls = create_cluster_tls(cluster_id, directory=_certs_dir())
            folders = [remote.cluster_dir(s, cluster_id) for s in sessions]
            await asyncio.gather(*(s.put([tls.ca_file, tls.cert_file("worker"), tls.key_file("worker")]
                                         + ([tls.cert_file("scheduler"), tls.key_file("scheduler")] if i == 0 else []),
                                         folders[i]) for i, s in enumerate(sessions)))
            address = await self._start_scheduler(spec, sessions[0], folders[0], pythons[0], checkpoint)
            checkpoint.address(address)
            rate = config.get("ssh.rate-per-hour")
            if rate is not None:
                checkpoint.rate(float(rate))
            count = await self._start_workers(spec, sessions, folders, pythons, facts, address, checkpoint)
            await self._wait_for_workers(address, tls.security("client"), count, sessions, folders)
            for s in sessions:
                checkpoint.resource_state(f"{s.host.label}/{cluster_id}", "running")
            return SSHDeployment(address, security=tls.security("client"), provider=self, checkpoint=checkpoint,
                                 rate_per_hour=float(rate) if rate is not None else None)
        except BaseException:
            await asyncio.shield(self._cleanup(sessions, cluster_id, checkpoint))
            raise
        finally:
            for s in sessions:
                await s.close()

    async def _environment(self, spec: ClusterSpec, sessions: list[Session], facts: list[remote.HostFacts],
                           checkpoint: Checkpoint) -> list[str]:
        """The python each host runs Dask with: its own (environment 'none') or the synced venv's."""
        lock = envsync.lock_for(spec.environment, default=str(config.get("ssh.env")))
        if lock is None:  # environment="none": the hosts' python as it is
            return [f.executable for f in facts]
        with tempfile.TemporaryDirectory(prefix="cumulo-env-") as tmp:
            started = time.monotonic()
            wheels = envsync.build_wheels(lock, Path(tmp) / "wheels")
            if wheels:
                self._say(f"built {len(wheels)} local package(s) into wheels "
                          f"({', '.join(d.name for d in lock.local)}) in {time.monotonic() - started:.1f}s", checkpoint)
            checkpoint.event("environment", json.dumps(lock.describe()))
            self._say(f"environment {lock.digest}: {len(lock.pins)} packages + {len(wheels)} local, on "
                      f"{len(sessions)} host(s) ...", checkpoint)
            done = await environment.install_all(sessions, facts, lock, wheels, staging=Path(tmp))
        for s, (_, how, seconds) in zip(sessions, done):
            self._say(f"{s.host.label}: environment {how} in {seconds:.1f}s", checkpoint)
        return [python for python, _, _ in done]

    async def _start_scheduler(self, spec: ClusterSpec, head: Session, folder: str, python: str,
                               checkpoint: Checkpoint) -> str:
        idle = spec.idle_timeout or config.get("guards.idle-timeout")
        argv = [python, "-m", "distributed.cli.dask_scheduler", "--host", head.host.host,
                "--port", str(int(config.get("ssh.scheduler-port"))), "--protocol", "tls",
                "--tls-ca-file", f"{folder}/ca.pem", "--tls-cert", f"{folder}/scheduler.pem",
                "--tls-key", f"{folder}/scheduler-key.pem", "--scheduler-file", f"{folder}/scheduler.json",
                "--dashboard-address", "127.0.0.1:0"]
        if idle:
            argv += ["--idle-timeout", f"{float(parse_timedelta(idle)):.0f}s"]
        await remote.start_detached(head, folder, "scheduler", argv)

        async def written() -> str | None:
            """The address the scheduler wrote; "" once its process is gone (no point waiting)."""
            text = await head.read(f"{folder}/scheduler.json")
            if text:
                with contextlib.suppress(ValueError):
                    return str(json.loads(text)["address"])
            alive = await head.run(f"kill -0 $(cat {folder}/scheduler.pid) 2>/dev/null && echo up", check=False)
            return None if alive.strip() == "up" else ""

        try:
            address = await until(written, timeout=_SCHEDULER_WAIT_S, interval=0.3)
        except TimeoutError:
            address = ""
        if address:
            self._say(f"scheduler at {address} on {head.host.label}", checkpoint)
            return address
        log = await remote.tail_log(head, folder, "scheduler")
        raise ProviderError(f"the scheduler on {head.host.label} did not start:\n  {log or '(no log)'}")

    async def _start_workers(self, spec: ClusterSpec, sessions: list[Session], folders: list[str],
                             pythons: list[str], facts: list[remote.HostFacts], address: str,
                             checkpoint: Checkpoint) -> int:
        count = spec.workers if spec.workers is not None else len(sessions)
        for i in range(count):
            s, folder, python, f = sessions[i % len(sessions)], folders[i % len(sessions)], pythons[i % len(
                sessions)], facts[i % len(sessions)]
            cuda = f.gpus > 0 and "yes" in await s.run(f"{python} -c 'import dask_cuda' 2>/dev/null && echo yes",
                                                        check=False)
            if f.gpus > 0 and not cuda:
                self._say(f"{s.host.label} has {f.gpus} GPU(s) but no dask-cuda in its environment: plain worker",
                          checkpoint)
            cli = ["-m", "dask", "cuda", "worker"] if cuda else ["-m", "distributed.cli.dask_worker"]
            argv = [python, *cli, address, "--name", f"{s.host.host}-{i}", "--tls-ca-file", f"{folder}/ca.pem",
                    "--tls-cert", f"{folder}/worker.pem", "--tls-key", f"{folder}/worker-key.pem",
                    "--death-timeout", "120"]
            if spec.threads_per_worker and not cuda:
                argv += ["--nthreads", str(spec.threads_per_worker)]
            if spec.memory_limit is not None:
                argv += ["--memory-limit", str(spec.memory_limit)]
            await remote.start_detached(s, folder, f"worker-{i}", argv)
        self._say(f"{count} worker(s) started on {len(sessions)} host(s)", checkpoint)
        return count

    async def _wait_for_workers(self, address: str, security: Security, count: int, sessions: list[Session],
                                folders: list[str]) -> None:
        """Return once ``count`` workers joined; LaunchTimeout with their logs' last lines otherwise."""
        from distributed.core import rpc

        timeout = float(parse_timedelta(config.get("ssh.workers-timeout")))
        joined = 0
        async with rpc(address, connection_args=security.get_connection_args("client"), timeout=10) as scheduler:

            async def all_joined() -> bool | None:
                nonlocal joined
                joined = len((await scheduler.identity()).get("workers", {}))
                return True if joined >= count else None

            try:
                await until(all_joined, timeout=timeout, interval=0.25)
                return
            except TimeoutError:
                pass
        logs = [f"{s.host.label}:\n  {await remote.tail_log(s, folder, 'worker-0', 6)}"
                for s, folder in zip(sessions, folders)]
        raise LaunchTimeout(f"{joined} of {count} workers joined within {timeout:g}s (cumulo.ssh.workers-timeout); "
                            "worker logs:\n" + "\n".join(logs))

    async def _cleanup(self, sessions: list[Session], cluster_id: str, checkpoint: Checkpoint) -> None:
        """A launch failed: stop whatever started on the hosts we reached; remove the local keys."""
        try:
            await self._stop_hosts(cluster_id, checkpoint, None)
        except CumuloError as exc:
            logger.error("cumulo: cleanup after a failed launch: %s", exc)

    def dashboard_host(self, record: ClusterRecord, resources: list[ResourceRecord]) -> Host | None:
        """The first host (the scheduler's): its dashboard listens on that host's loopback only."""
        for res in resources:
            if res.kind == "ssh-host" and res.meta.get("host"):
                meta = res.meta
                return Host(str(meta["host"]), int(meta.get("port") or 22), meta.get("user"))
        return None

    # -- stop --------------------------------------------------------------------------

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Stop the cluster from its row alone (another process, `cumulo down`, a reaper)."""
        security = None
        with contextlib.suppress(CumuloError):
            security = self.security(record)
        await self._stop_hosts(record.id, checkpoint, record.address, security)

    async def _stop_hosts(self, cluster_id: str, checkpoint: Checkpoint, address: str | None,
                          security: Security | None = None) -> None:
        """Ask the scheduler to shut down, then make sure no process of the cluster is left on any host.

        TerminateError naming the hosts where that could not be confirmed (the row stays open)."""
        if address and security is not None:
            with contextlib.suppress(CumuloError, OSError):
                await shutdown_scheduler(address, security, timeout=5)
        failures: list[str] = []
        for res in checkpoint.resources("ssh-host"):
            if res.state in ("stopped", "gone"):
                continue
            meta = res.meta or {}
            host = Host(str(meta.get("host")), int(meta.get("port") or 22), meta.get("user"))
            try:
                async with await open_session(host) as s:
                    python = str(meta.get("python") or config.get("ssh.python"))
                    how = await remote.stop_all(s, remote.cluster_dir(s, cluster_id), python)
                checkpoint.resource_state(res.resource_id, how)
            except CumuloError as exc:
                failures.append(f"{host.label}: {exc}")
        if failures:
            raise TerminateError("could not confirm that cluster processes stopped on "
                                 + "; ".join(failures) + ". They may still run; `cumulo down` retries")
        remove_cluster_tls(cluster_id, directory=_certs_dir())


class SSHDeployment(Deployment):
    """A running ssh:// cluster held by the process that launched it; close() stops it on every host."""

    def __init__(self, address: str, *, security: Security, provider: SSHProvider, checkpoint: Checkpoint,
                 rate_per_hour: float | None) -> None:
        super().__init__(address, security=security)
        self.rate_per_hour = rate_per_hour
        self._provider = provider
        self._checkpoint = checkpoint

    async def close(self) -> None:
        await self._provider._stop_hosts(self._checkpoint.cluster_id, self._checkpoint, self.address, self.security)
