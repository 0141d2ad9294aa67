"""The fault matrix: every way Lambda fails us, and after each, the account and the registry agree.

Each case drives the provider through the lifecycle against the emulator
(lambda_support.start/close), injects one fault, and then checks
:func:`check_agreement`: every instance Lambda lists as not terminated is
recorded in an open row (nothing bills unseen), nothing recorded as terminated
still runs, and every cumulo firewall rule and SSH key belongs to an open row.
The autouse ``no_orphans`` check then requires the account to be clean.
"""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

from cumulo.exceptions import CapacityError, LaunchTimeout, ProviderError
from cumulo.providers.lambda_cloud import LambdaApi, LambdaProvider
from cumulo.life.registry import Registry
from cumulo.spec import ClusterSpec

from .lambda_emulator import Emulator
from .lambda_support import (  # noqa: F401  (fixtures)
    check_agreement, close, emulator, no_orphans, run, start, stop_from_row,
)


def _spec(workers: int = 1) -> ClusterSpec:
    return ClusterSpec(provider="lambda", gpu="A10", workers=workers)


def _state(registry: Registry | None = None, name: str = "t") -> str | None:
    row = (registry or Registry()).latest(name)
    return None if row is None else row.state


def test_no_capacity(emulator: Emulator) -> None:
    emulator.faults.no_capacity = {"gpu_1x_a10"}
    with pytest.raises(CapacityError, match="no capacity for gpu_1x_a10"):
        run(start(_spec()))
    assert _state() is None and emulator.launches == 0
    check_agreement(emulator, [Registry()])


@pytest.mark.parametrize("fault", ["rate_limit_burst", "cloudflare_429", "launch_interval"])
def test_429_bursts_are_absorbed(emulator: Emulator, fault: str) -> None:
    workers = 2
    if fault == "launch_interval":  # Lambda's own launch limit, which this client is told to ignore:
        emulator.launch_interval, emulator.retry_after = 0.3, 0.12  # the two workers launch back to back
        workers = 3
    else:
        setattr(emulator.faults, fault, 3)

    async def go() -> None:
        s = await start(_spec(workers=workers))
        check_agreement(emulator, [s.registry])
        await close(s)

    run(go())
    assert 429 in [status for _, _, status in emulator.requests]
    assert _state() == "closed"
    check_agreement(emulator, [Registry()])


@pytest.mark.parametrize("failures", [1, 100], ids=["transient", "permanent"])
def test_5xx_on_launch_nothing_created(emulator: Emulator, failures: int) -> None:
    emulator.faults.launch_500 = failures
    with pytest.raises(ProviderError, match="may or may not have been applied"):
        run(start(_spec()))
    assert emulator.launches == 1 and not emulator.instances, "never retried blindly"
    assert _state() == "failed"
    check_agreement(emulator, [Registry()])


def test_5xx_on_launch_after_creating(emulator: Emulator) -> None:
    emulator.faults.launch_500_after_create = True
    with pytest.raises(ProviderError, match="may or may not have been applied"):
        run(start(_spec(workers=2)))
    assert len(emulator.instances) == 1 and not emulator.live()
    assert _state() == "failed"
    check_agreement(emulator, [Registry()])


def test_5xx_on_terminate_transient(emulator: Emulator) -> None:
    async def go() -> None:
        s = await start(_spec())
        emulator.faults.terminate_failures = 2
        await close(s)

    run(go())
    assert _state() == "closed"
    check_agreement(emulator, [Registry()])


def test_5xx_on_terminate_permanent_then_retried(emulator: Emulator) -> None:
    async def go() -> str:
        s = await start(_spec(workers=2))
        emulator.faults.terminate_failures = 1000
        with dask.config.set({"cumulo.lambda.max-retries": 1}), pytest.raises(ProviderError, match="failed 2 times"):
            await close(s)
        return s.id

    cid = run(go())
    registry = Registry()
    assert registry.get(cid).state == "stop-failed" and len(emulator.live()) == 2
    check_agreement(emulator, [registry])  # still billing, but every instance is in an open row
    emulator.faults.terminate_failures = 0
    run(stop_from_row(registry, cid))
    assert registry.get(cid).state == "closed"
    check_agreement(emulator, [registry])


def test_stuck_boot(emulator: Emulator) -> None:
    emulator.faults.stuck_booting = True
    with dask.config.set({"cumulo.cloud.boot-timeout": 0.4}):
        with pytest.raises(LaunchTimeout):
            run(start(_spec(workers=2)))
    assert _state() == "failed" and not emulator.live()
    check_agreement(emulator, [Registry()])


def test_half_launch(emulator: Emulator) -> None:
    emulator.faults.fail_launch_at = 3  # the head and the first worker launch, the second worker is refused
    with pytest.raises(CapacityError):
        run(start(_spec(workers=3)))
    assert len(emulator.instances) == 2 and not emulator.live()
    assert _state() == "failed"
    check_agreement(emulator, [Registry()])


def test_instance_dropped_from_listing(emulator: Emulator) -> None:
    async def go() -> None:
        s = await start(_spec(workers=2))
        emulator.forget(next(i.id for i in emulator.live() if i.name.endswith("-head")))
        check_agreement(emulator, [s.registry])
        await close(s)

    run(go())
    assert _state() == "closed"
    assert all(status == 200 for m, p, status in emulator.requests if p.endswith("/terminate"))
    check_agreement(emulator, [Registry()])


def test_two_registries_on_one_account(emulator: Emulator, tmp_path: Path) -> None:
    """Each installation's sweep terminates its own leftovers and only reports the other's running cluster."""
    a, b = Registry(), Registry(tmp_path / "teammate.db")
    assert a.installation_id != b.installation_id

    async def plant(name: str) -> None:
        async with LambdaApi() as api:
            await api.launch(region="us-east-1", instance_type="gpu_1x_a10", name=name, ssh_key="emulator-key",
                             user_data="#!/bin/bash\ntrue\n")

    async def go() -> None:
        sa = await start(_spec(), registry=a, name="mine")
        sb = await start(_spec(), registry=b, name="theirs")
        await plant(f"cumulo-{a.installation_id}-0dd0dd0dd0dd-head")  # a's leftover (its registry was reset)
        with pytest.raises(AssertionError, match="bills unseen"):
            check_agreement(emulator, [a, b])  # the leftover bills unseen until a's sweep
        found_a = await LambdaProvider().sweep_orphans(a, dry_run=False)
        actions = {o.name: o.action for o in found_a if o.kind == "instance"}
        b_head = f"cumulo-{b.installation_id}-{sb.id}-head"
        assert actions == {f"cumulo-{a.installation_id}-0dd0dd0dd0dd-head": "terminated", b_head: "reported"}
        found_b = await LambdaProvider().sweep_orphans(b, dry_run=False)
        assert {o.name: o.action for o in found_b if o.kind == "instance"} == {
            f"cumulo-{a.installation_id}-{sa.id}-head": "reported"}
        assert len(emulator.live()) == 2, "neither sweep touched the other's running cluster"
        rules = set(emulator.cumulo_rulesets())
        keys = {k["name"] for k in emulator.ssh_keys}
        for reg, s in ((a, sa), (b, sb)):
            assert f"cumulo-{reg.installation_id}-{s.id}-scheduler-tls" in rules
            assert f"cumulo-{reg.installation_id}-{s.id}" in keys
        check_agreement(emulator, [a, b])
        await close(sa)
        await close(sb)

    run(go())
    assert _state(a, "mine") == "closed" and _state(b, "theirs") == "closed"
    check_agreement(emulator, [a, b])


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_reapers_at_once(emulator: Emulator) -> None:
    """The CLI's and the server's reapers sweep the same abandoned cluster at the same moment: one
    confirmed stop, no instance left, no false alarm, and the registry and the account agree."""
    import threading
    import time

    from cumulo.life import reaper

    registry = Registry()
    started = run(start(_spec(workers=2), registry=registry, name="abandoned"))
    registry.update(started.id, owner_pid=_dead_pid(), lease_seconds=1.0, heartbeat=time.time() - 600)
    barrier = threading.Barrier(2)
    results: list[reaper.Sweep] = []

    def sweep() -> None:
        barrier.wait()
        results.append(reaper.sweep(Registry(registry.path)))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 2
    acted = [r for sweep_ in results for r in sweep_.clusters if r.name == "abandoned"]
    assert acted and not [r for r in acted if r.failed], [r.text() for r in acted]
    assert registry.get(started.id).state == "closed"
    assert emulator.wait_idle(10) and emulator.live() == []
    check_agreement(emulator, [registry])


def test_kernel_sigkill_mid_launch_is_reaped_after_the_grace(emulator: Emulator, tmp_path: Path) -> None:
    """A kernel killed while its head boots leaves a 'starting' row and a billing instance; the reaper
    (as the CLI and the server run it) waits out the lease grace, then stops it, confirmed."""
    import time

    from cumulo.life import reaper

    from .cloud_support import kill_mid_launch
    from .lambda_support import KILLED_LAUNCH, fast_config

    emulator.boot_seconds = 60  # still booting when the kernel dies
    cid = kill_mid_launch(KILLED_LAUNCH, fast_config(emulator, tmp_path))
    registry = Registry()
    assert registry.get(cid).state == "starting" and emulator.live()
    check_agreement(emulator, [registry])  # it bills, but it is visible: an open row in `cumulo ls`
    emulator.boot_seconds = 0.3
    with dask.config.set({"cumulo.guards.lease-grace": "60s"}):
        assert [r.name for r in reaper.sweep(registry).clusters] == []  # within the grace: maybe just slow
        registry.update(cid, heartbeat=time.time() - 120)
        done = reaper.sweep(registry).clusters
    assert [(r.name, r.action) for r in done] == [("killed", "stopped")]
    assert "died while it was starting" in done[0].reason
    assert registry.get(cid).state == "closed"
    assert emulator.wait_idle(10) and emulator.live() == []
    check_agreement(emulator, [registry])
