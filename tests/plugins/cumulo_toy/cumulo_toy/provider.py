"""The Toy Cloud provider: launch, stop, confirm gone, sweep orphans, and its declarations.

An "instance" is a process in a session of its own (a Dask scheduler, or a worker); the "account"
is a folder holding one JSON file per running instance, with the installation and cluster it
belongs to (Toy Cloud's tags). Nothing here is special-cased by cumulo.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dask.utils import parse_timedelta
from distributed.core import rpc

from cumulo import config
from cumulo.aio import until
from cumulo.life.checkpoint import Checkpoint
from cumulo.security.credentials import Credential, find
from cumulo.exceptions import LaunchTimeout
from cumulo.providers import Deployment, Orphan, Provider
from cumulo.life.registry import ClusterRecord, Registry
from cumulo.spec import ClusterSpec

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
LOGIN = Credential(what="Toy Cloud login", env_var="TOYCLOUD_LOGIN", pattern=r"\btoylogin_[a-z0-9]{24}\b")


def account() -> Path:
    folder = Path(config.get("toy.account") or Path(tempfile.gettempdir()) / "cumulo-toy-cloud")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def instances() -> list[dict[str, Any]]:
    """The account's instances that still run."""
    out = []
    for path in sorted(account().glob("*.json")):
        inst = json.loads(path.read_text())
        if _alive(inst["pid"]):
            out.append(inst)
        else:
            path.unlink(missing_ok=True)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, OSError):
        return False


def start_instance(argv: list[str], *, installation: str, cluster_id: str, role: str) -> int:
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    (account() / f"{proc.pid}.json").write_text(json.dumps(
        {"pid": proc.pid, "installation": installation, "cluster": cluster_id, "role": role,
         "started": time.time()}))
    return proc.pid


def terminate(pids: list[int]) -> None:
    """Terminate instances and return once they are gone (SIGKILL for what is left after 5 s)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if _alive(pid):
                os.killpg(pid, sig)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
    for pid in pids:
        (account() / f"{pid}.json").unlink(missing_ok=True)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Instances:
    """The deployment's manager: closing it terminates the cluster's instances."""

    def __init__(self, provider: ToyProvider, checkpoint: Checkpoint) -> None:
        self.provider, self.checkpoint = provider, checkpoint

    async def close(self) -> None:
        await self.provider.terminate_cluster(self.checkpoint)


class ToyProvider(Provider):
    """Clusters at Toy Cloud."""

    name = "toy"
    bills_independently = True
    sweeps_orphans = True
    can_scale = False
    launchable_from_server = False
    config_file = HERE / "config.yaml"
    credentials = (LOGIN,)
    price_file = HERE / "prices.csv"
    live_prices = True

    async def preflight(self, spec: ClusterSpec) -> None:
        find(LOGIN)  # CredentialsError saying where it looked when the login is not set

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        port = _port()
        address = f"tcp://127.0.0.1:{port}"
        who = {"installation": checkpoint.installation_id, "cluster_id": cluster_id}
        head = start_instance([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0"], role="head", **who)
        checkpoint.resource("instance", str(head), state="running")
        worker = start_instance([str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                 "--no-nanny", "--no-dashboard"], role="worker-1", **who)
        checkpoint.resource("instance", str(worker), state="running")
        checkpoint.rate(float(config.get("toy.rate-per-hour")))

        async def joined() -> bool | None:
            try:
                async with rpc(address, timeout=2) as scheduler:
                    return True if (await scheduler.identity()).get("workers") else None
            except (OSError, TimeoutError):
                return None

        try:
            await until(joined, timeout=float(parse_timedelta(config.get("toy.boot-timeout"))), interval=0.1)
        except TimeoutError:
            await self.terminate_cluster(checkpoint)
            raise LaunchTimeout("Toy Cloud's worker did not join in time (cumulo.toy.boot-timeout)") from None
        deployment = Deployment(address, manager=_Instances(self, checkpoint))
        deployment.rate_per_hour = float(config.get("toy.rate-per-hour"))
        return deployment

    async def terminate_cluster(self, checkpoint: Checkpoint) -> None:
        pids = [int(r.resource_id) for r in checkpoint.resources() if r.kind == "instance"]
        terminate(pids)
        for pid in pids:
            checkpoint.resource_state(str(pid), "terminated")

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        await self.terminate_cluster(checkpoint)

    async def confirm_gone(self, record: ClusterRecord, checkpoint: Checkpoint) -> bool:
        return not any(_alive(int(r.resource_id)) for r in checkpoint.resources() if r.kind == "instance")

    async def sweep_orphans(self, registry: Registry, *, dry_run: bool = True,
                            terminate_unknown: bool = False) -> list[Orphan]:
        found = []
        for inst in instances():
            try:
                row: ClusterRecord | None = registry.get(inst["cluster"])
            except KeyError:
                row = None
            if row is not None and row.is_open:
                continue
            ours = inst["installation"] == registry.installation_id
            act = ours or terminate_unknown
            if act and not dry_run:
                terminate([inst["pid"]])
            found.append(Orphan(
                provider=self.name, resource_id=str(inst["pid"]), name=f"toy-{inst['cluster']}-{inst['role']}",
                cluster_id=inst["cluster"], reason="its cluster is not open in this registry", status="running",
                price_per_hour=float(config.get("toy.rate-per-hour")), running_since=inst["started"], ours=ours,
                action=("would terminate" if dry_run else "terminated") if act else "reported"))
        return found

    @classmethod
    def fetch_prices(cls, today: str) -> list[dict[str, Any]]:
        return [{"provider": "toy", "instance_type": "toy.gpu1", "gpu_model": "T4", "gpu_count": 1,
                 "gpu_memory_gb": 16, "vcpus": 4, "ram_gb": 16,
                 "on_demand_per_hour": float(config.get("toy.live-rate-per-hour")), "spot_per_hour": None,
                 "region": "all", "source": "toy://prices", "as_of": today}]
