"""Driving a cloud provider the way connect() and close() do, through cumulo.life.lifecycle, for provider tests.

:func:`start` runs preflight, then a ``starting`` row, a checkpoint and the
launch (a failed launch is abandoned by the lifecycle and re-raised);
:func:`close` stops with the owner's deployment and :func:`stop_from_row` as
another process would (`cumulo down`). :func:`killed_launch` is the script of a kernel that a test
SIGKILLs during a launch, and :func:`notebook_text` runs a gallery notebook in a real kernel. Shared by
the Lambda and AWS tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from cumulo.life.checkpoint import Checkpoint
from cumulo.life.lifecycle import Lifecycle
from cumulo.life.registry import ClusterRecord, Registry
from cumulo.providers.base import Deployment
from cumulo.providers.cloud import CloudProvider
from cumulo.spec import ClusterSpec
from nbclient import NotebookClient

__all__ = ["Started", "close", "kill_mid_launch", "killed_launch", "notebook_text", "start", "stop_from_row"]


@dataclass
class Started:
    """A Lambda cluster started through the lifecycle, as connect() would."""

    registry: Registry
    record: ClusterRecord
    checkpoint: Checkpoint
    provider: CloudProvider
    deployment: Deployment

    @property
    def id(self) -> str:
        return self.record.id


async def start(spec: ClusterSpec, *, provider: CloudProvider, registry: Registry | None = None,
                name: str = "t") -> Started:
    """preflight -> begin (row) -> checkpoint -> launch; a failed launch is abandoned by the lifecycle and re-raised."""
    registry = registry or Registry()
    life = Lifecycle(registry)
    await provider.preflight(spec)
    record = life.begin(name, provider, spec.to_dict())
    checkpoint = life.checkpoint(record, provider)
    try:
        deployment = await provider.launch(spec, cluster_id=record.id, checkpoint=checkpoint)
    except BaseException as exc:
        await life.abandon(record, provider, exc, checkpoint=checkpoint)
        raise
    life.running(record.id)
    return Started(registry, record, checkpoint, provider, deployment)


async def close(started: Started, *, why: str = "closed by the test") -> None:
    """Stop through the lifecycle with the owner's deployment (the row closes only on a confirmed stop)."""
    await Lifecycle(started.registry).stop(started.registry.get(started.id), started.provider, why=why,
                                           deployment=started.deployment)


async def stop_from_row(registry: Registry, cluster_id: str, provider: CloudProvider) -> None:
    """Stop as another process would (`cumulo down`): the row and its recorded resources only."""
    await Lifecycle(registry).stop(registry.get(cluster_id), provider, why="cumulo down")


def killed_launch(provider: str, cls: str, *, gpu: str) -> str:
    """A kernel (``python -c``) that launches a 2-worker cluster of ``provider`` (module ``cumulo.providers.<x>``,
    class ``cls``) named argv[2] with the config in argv[1], printing the row id first, and then waits: tests
    SIGKILL it part way through the launch."""
    module = {"lambda": "lambda_cloud"}.get(provider, provider)
    return f"""
import asyncio, json, sys
import dask
from cumulo.life.lifecycle import Lifecycle
from cumulo.providers.{module} import {cls}
from cumulo.life.registry import Registry
from cumulo.spec import ClusterSpec
dask.config.set(json.loads(sys.argv[1]))
spec = ClusterSpec(provider="{provider}", gpu="{gpu}", workers=2)
provider = {cls}()
life = Lifecycle(Registry())
async def main():
    await provider.preflight(spec)
    record = life.begin(sys.argv[2], provider, spec.to_dict())
    print(record.id, flush=True)
    await provider.launch(spec, cluster_id=record.id, checkpoint=life.checkpoint(record, provider))
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def kill_mid_launch(script: str, config: dict[str, Any], *, name: str = "killed", timeout: float = 60) -> str:
    """Run ``script`` (a :func:`killed_launch` kernel) with ``config``, SIGKILL it once the registry records its
    first instance (part way through the launch), and return the cluster id it printed."""
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(config), name], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
    try:
        cid = proc.stdout.readline().strip()  # type: ignore[union-attr]
        registry = Registry()
        deadline = time.monotonic() + timeout
        while not [r for r in registry.resources(cluster_id=cid) if r.kind == "instance"]:
            assert time.monotonic() < deadline, "the head was never recorded"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    return cid


def notebook_text(path: Path, tmp_path: Path) -> str:
    """Execute the notebook at ``path`` in a real kernel (working directory ``tmp_path``); its outputs' text."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
        for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
