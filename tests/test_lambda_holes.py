"""A Lambda cluster whose instances another installation's sweep terminated: its owner learns at once, its row
records it and its meter stops; the sweep's line says one thing. Against the emulator, with real instances."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dask

import cumulo
from cumulo.providers.lambda_cloud import LambdaProvider
from cumulo.life.registry import Registry

from .conftest import wait_for
from .lambda_emulator import Emulator
from .lambda_support import emulator, no_orphans, run  # noqa: F401  (fixtures)


def test_terminate_unknown_elsewhere_closes_the_owners_row(emulator: Emulator, tmp_path: Path) -> None:
    mine = Registry()
    teammate = Registry(tmp_path / "teammate.db")
    with dask.config.set({"cumulo.guards.interval": "0.2s", "cumulo.widgets.cell-line-on-connect": False}):
        cluster = cumulo.connect("lambda", name="mine", gpu="A10", workers=1)
        try:
            assert cluster.client.submit(lambda: 1 + 1).result() == 2
            running = len(emulator.live())
            found = run(LambdaProvider().sweep_orphans(teammate, dry_run=False, terminate_unknown=True))
            lines = [o.line() for o in found if o.kind == "instance"]
            assert running >= 1 and len(lines) == running and all("terminated" in line for line in lines)
            assert not any("left alone" in line for line in lines), lines
            wait_for(lambda: mine.get(cluster.id).state == "lost", timeout=60, interval=0.2,
                     what="the owner to record that its instances are gone")
            row = mine.get(cluster.id)
            assert row.closed is not None and "terminated outside" in (row.note or "")
            assert cluster.status != "running"
            spent = cluster.usage.spend()
            assert spent.amount == cluster.usage.spend().amount, "the meter stopped with the row"
        finally:
            cluster.close()
    assert not emulator.live()


def test_the_heads_scheduler_stops_itself_when_idle(emulator: Emulator) -> None:
    """The last resort when no cumulo process is left: the head's scheduler runs with the idle timeout."""
    from distributed.core import rpc

    from cumulo.spec import ClusterSpec

    from .lambda_support import close, start

    async def go() -> None:
        s = await start(ClusterSpec(provider="lambda", gpu="A10", workers=1, idle_timeout="3s"))
        try:
            head = next(i for i in emulator.live() if i.name.endswith("-head"))
            # the cluster's idle timeout plus the time the launch may wait for workers (they may still boot)
            assert "--idle-timeout 18s" in head.user_data
            args = s.deployment.security.get_connection_args("client")

            async def answers() -> bool:
                try:
                    async with rpc(s.deployment.address, connection_args=args, timeout=2) as sched:
                        await sched.identity()
                    return True
                except (OSError, TimeoutError):
                    return False

            assert await answers()
            for _ in range(600):
                if not await answers():
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the idle head's scheduler kept running")
        finally:
            await close(s)

    with dask.config.set({"cumulo.cloud.workers-timeout": 15}):
        run(go())
