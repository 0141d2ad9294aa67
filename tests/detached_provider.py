"""A test provider whose scheduler outlives the kernel that started it, like a cloud cluster.

It starts `dask scheduler` and one `dask worker` as processes in their own
session (so killing the kernel leaves them running), records their pids as
resources in the registry, and stops them the way any provider does: by asking
the scheduler to terminate. ``rate_per_hour`` is configurable through the
spec's options so that tests can give it a price.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from distributed.core import rpc

from cumulo.life.checkpoint import Checkpoint
from cumulo.providers import Deployment, Provider, register_provider
from cumulo.life.registry import ClusterRecord
from cumulo.spec import ClusterSpec

NAME = "detached-test"
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Manager:
    def __init__(self, address: str, pids: list[int]) -> None:
        self.address = address
        self.pids = pids

    async def close(self) -> None:
        await DetachedProvider().stop_address(self.address, self.pids)


class DetachedProvider(Provider):
    name = NAME

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        port = _port()
        address = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        log = open(os.devnull, "wb")
        sched = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", "127.0.0.1:0"], stdout=log, stderr=log, env=env, start_new_session=True)
        checkpoint.resource("process", str(sched.pid), state="running")
        worker = subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
             "--no-dashboard"], stdout=log, stderr=log, env=env, start_new_session=True)
        checkpoint.resource("process", str(worker.pid), state="running")
        from distributed import Client

        for _ in range(600):
            try:
                async with Client(address, asynchronous=True, timeout=2) as c:
                    await c.wait_for_workers(1, timeout=60)
                    break
            except OSError:
                await asyncio.sleep(0.1)
        deployment = Deployment(address, manager=_Manager(address, [sched.pid, worker.pid]))
        deployment.rate_per_hour = spec.options.get("rate_per_hour")
        return deployment

    async def stop_address(self, address: str, pids: list[int]) -> None:
        try:
            async with rpc(address, timeout=5) as s:
                await s.terminate()
        except (OSError, TimeoutError):
            pass
        for _ in range(200):
            if not any(_alive(p) for p in pids):
                return
            await asyncio.sleep(0.05)
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        pids = [int(r.resource_id) for r in checkpoint.resources()]
        await self.stop_address(record.address or "", pids)
        for p in pids:
            checkpoint.resource_state(str(p), "terminated")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of a process we started is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def register() -> None:
    register_provider(NAME, "tests.detached_provider:DetachedProvider")
