"""Budget, idle and lease guards on real clusters, and `reap` for clusters whose kernel is gone.

No timed assertions: every wait is a bounded poll for a state change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import pytest

import cumulo
from cumulo.life import guards, reaper
from cumulo.exceptions import BudgetExceeded, NotOwner
from cumulo.life.registry import Registry

from . import detached_provider
from .conftest import ROOT, wait_for

FAST = {"cumulo.guards.interval": "0.2s", "cumulo.cost.sample-interval": "0.2s",
        "cumulo.widgets.cell-line-on-connect": False}


@pytest.fixture(autouse=True)
def fast_guards():
    detached_provider.register()
    with dask.config.set(FAST):
        yield


def events(cluster) -> list[str]:  # type: ignore[no-untyped-def]
    return [kind for _, kind, _ in cluster.registry.events(cluster.id)]


def test_budget_breach_closes_the_cluster() -> None:
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 3600.0, "cumulo.guards.budget-action": "close"}):
        with pytest.warns(guards.BudgetWarning):
            cluster = cumulo.connect(workers=1, threads_per_worker=1, budget=2.0)
            try:
                wait_for(lambda: cluster.status == "closed", timeout=60, what="budget close")
            finally:
                cluster.close()
    rec = cluster.registry.get(cluster.id)
    assert rec.state == "closed"
    assert rec.cost is not None and rec.cost >= 2.0 and rec.cost_kind == "estimate"
    kinds = events(cluster)
    assert "budget-warning" in kinds and "budget" in kinds
    assert isinstance(cluster.watchdog.tripped, BudgetExceeded)
    assert "reached its $2.00 budget" in str(cluster.watchdog.tripped)


def test_budget_scale_to_zero_keeps_the_scheduler() -> None:
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 3600.0,
                          "cumulo.guards.budget-action": "scale-to-zero", "cumulo.guards.budget-warn-at": []}):
        with cumulo.connect(workers=1, threads_per_worker=1, budget=1.0) as cluster:
            wait_for(lambda: cluster.watchdog.tripped is not None, timeout=60, what="budget reached")
            wait_for(lambda: not cluster.client.scheduler_info()["workers"], timeout=60, what="workers gone")
            assert cluster.status == "running"
            assert "budget" in events(cluster)


def test_budget_warn_only() -> None:
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 3600.0, "cumulo.guards.budget-action": "warn",
                          "cumulo.guards.budget-warn-at": []}):
        with pytest.warns(guards.BudgetWarning, match="action: warn") as caught:
            with cumulo.connect(workers=1, threads_per_worker=1, budget=1.0) as cluster:
                wait_for(lambda: cluster.watchdog.tripped is not None, timeout=60, what="budget reached")
                assert cluster.status == "running"
    # the warning names cumulo's guard, not a line of cumulo's loop code that a user cannot act on
    assert {w.filename for w in caught if w.category is guards.BudgetWarning} == {"cumulo budget guard"}


def test_no_rate_means_no_budget_action() -> None:
    with cumulo.connect(workers=1, threads_per_worker=1, budget=0.01) as cluster:
        guard = cluster.watchdog
        assert guard.check() == []
        assert guard.last_spend is not None and guard.last_spend.text() == "no rate set"
        assert cluster.registry.get(cluster.id).cost is None
        # an unpriced cluster has no idle timeout unless asked for
        assert cluster.registry.get(cluster.id).idle_timeout is None


def _hold(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_idle_shutdown_only_when_idle() -> None:
    cluster = cumulo.connect(workers=1, threads_per_worker=1, idle_timeout="1s")
    try:
        guard = cluster.watchdog
        guard.stop()  # drive the checks by hand while a task runs
        future = cluster.client.submit(_hold, 3.0, pure=False)
        wait_for(lambda: cluster.usage.ledger()["processing"] > 0, what="task running")
        assert "closed (idle)" not in guard.check()  # busy: never idle, whatever the clock says
        future.result()
        done = wait_for(lambda: guard.check() or None, timeout=30, interval=0.2, what="idle close")
        assert done == ["closed (idle)"]
        assert cluster.status == "closed"
        assert "idle" in events(cluster)
        assert cluster.registry.get(cluster.id).state == "closed"
    finally:
        cluster.close()


def test_default_idle_timeout_for_paid_clusters() -> None:
    with dask.config.set({"cumulo.cost.rate-per-gpu-hour": 2.0}):
        with cumulo.connect(workers=1, threads_per_worker=1) as cluster:
            assert cluster.registry.get(cluster.id).idle_timeout == 20 * 60


def test_lease_heartbeat_and_local_detach_refused() -> None:
    with dask.config.set({"cumulo.guards.lease-grace": "90s"}):
        with cumulo.connect(workers=1, threads_per_worker=1) as cluster:
            rec = cluster.registry.get(cluster.id)
            assert rec.lease_seconds == 90
            first = rec.heartbeat
            wait_for(lambda: cluster.registry.get(cluster.id).heartbeat > first, what="heartbeat")
            with pytest.raises(NotOwner, match="stops with it"):
                cluster.detach()
            assert reaper.reap(cluster.registry) == []  # its kernel (this process) is alive


KERNEL = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    import dask
    dask.config.set({{"cumulo.guards.interval": "0.2s", "cumulo.guards.lease-grace": "{grace}s",
                      "cumulo.widgets.cell-line-on-connect": False}})
    from tests import detached_provider
    detached_provider.register()
    import cumulo
    cluster = cumulo.connect("detached-test", name="orphan", options={{"rate_per_hour": 3.6}})
    print("READY", cluster.id, flush=True)
    time.sleep(600)
""")


def test_sigkilled_kernel_cluster_is_reaped_after_grace(tmp_path: Path) -> None:
    grace = 1.5
    proc = subprocess.Popen([sys.executable, "-c", KERNEL.format(root=str(ROOT), grace=grace)],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "kernel.log", "wb"),
                            env=dict(os.environ), cwd=str(ROOT), text=True)
    pids: list[int] = []
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("READY"), (tmp_path / "kernel.log").read_text()[-2000:]
        cid = line.split()[1]
        registry = Registry()
        pids = [int(r.resource_id) for r in registry.resources(cluster_id=cid)]
        assert registry.get(cid).lease_seconds == grace
        assert reaper.reap(registry) == []  # kernel alive: nothing to do
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert all(detached_provider._alive(p) for p in pids), "the cluster outlived its kernel"
        dry = wait_for(lambda: reaper.reap(registry, dry_run=True), timeout=30, interval=0.2, what="lease expiry")
        assert [r.action for r in dry] == ["would stop"]
        assert registry.get(cid).is_open
        done = reaper.reap(registry)
        assert len(done) == 1 and done[0].action == "stopped" and done[0].name == "orphan"
        assert "kernel gone" in done[0].reason
        assert done[0].cost is not None and done[0].cost > 0 and done[0].cost_kind == "estimate"
        assert "orphan" in done[0].text() and "$" in done[0].text()
        rec = registry.get(cid)
        assert rec.state == "closed" and "reaped" in (rec.note or "")
        wait_for(lambda: not any(detached_provider._alive(p) for p in pids), timeout=30, what="processes gone")
        assert reaper.reap(registry) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for p in pids:
            if detached_provider._alive(p):
                os.kill(p, signal.SIGKILL)


def test_detached_cluster_survives_lease_but_not_its_budget() -> None:
    with dask.config.set({"cumulo.guards.lease-grace": "1s", "cumulo.guards.budget-warn-at": []}):
        cluster = cumulo.connect("detached-test", options={"rate_per_hour": 3600.0}, budget=1e6)
    try:
        cluster.detach()
        cluster.watchdog.stop()  # as if the kernel were gone: no more heartbeats
        reg = cluster.registry
        reg.update(cluster.id, heartbeat=time.time() - 1000)
        assert reg.get(cluster.id).lease_seconds is None
        assert reaper.reap(reg) == []  # detached: the lease does not apply
        reg.update(cluster.id, budget=0.5)
        done = reaper.reap(reg)
        assert [r.action for r in done] == ["stopped"] and "budget" in done[0].reason
        assert reg.get(cluster.id).state == "closed"
    finally:
        cluster.close()


def test_reap_marks_lost_and_leaves_foreign_schedulers(dask_processes) -> None:  # type: ignore[no-untyped-def]
    reg = Registry()
    gone = reg.create("gone", "local", {}, state="running", address="tcp://127.0.0.1:9",
                      lease_seconds=1.0, heartbeat=time.time() - 60, owner_pid=1 << 22)
    foreign = reg.create("foreign", "address", {"address": dask_processes.address}, state="running",
                         address=dask_processes.address, lease_seconds=1.0, heartbeat=time.time() - 60,
                         owner_pid=1 << 22)
    done = {r.name: r for r in reaper.reap(reg)}
    assert done["gone"].action.startswith("marked lost")
    assert reg.get(gone.id).state == "lost"
    assert "not ours" in done["foreign"].action
    assert reg.get(foreign.id).state == "closed"
    assert dask_processes.scheduler.poll() is None, "a scheduler started outside cumulo keeps running"


def test_reap_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from cumulo.cli import main

    assert main(["reap", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "nothing to reap" in out
    assert "lambda: not checked for orphaned resources (no API key configured)" in out


def test_disconnect_releases_the_lease() -> None:
    with dask.config.set({"cumulo.guards.lease-grace": "1s"}):
        cluster = cumulo.connect("detached-test", options={"rate_per_hour": 1.0})
    try:
        assert cluster.registry.get(cluster.id).lease_seconds == 1
        cluster.disconnect()
        wait_for(lambda: cluster.registry.get(cluster.id).lease_seconds is None, what="lease released")
        assert cluster.registry.get(cluster.id).state == "running"
        # the event is written just after the lease is dropped
        wait_for(lambda: "detached" in events(cluster), timeout=10, what="the 'detached' event")
    finally:
        cumulo.connect(name=cluster.name).close()


def test_keep_alive_option_starts_without_a_lease() -> None:
    with cumulo.connect("detached-test", keep_alive=True) as cluster:
        assert cluster.registry.get(cluster.id).lease_seconds is None
    with dask.config.set({"cumulo.guards.keep-alive": True}):
        with cumulo.connect(workers=1, threads_per_worker=1) as cluster:
            assert cluster.registry.get(cluster.id).lease_seconds is None


def test_the_watchers_reach_a_cluster_only_through_its_public_surface() -> None:
    """The watchdog, the meter and ``usage`` act on a running cluster through cumulo.life.watched's protocols."""
    import inspect

    from cumulo.life import watchdog
    from cumulo.life.watched import Measured, Metered, Watched
    from cumulo.widgets import meter

    for module in (watchdog, meter):  # no `cluster._private` reach-ins left in the watchers' source
        assert not [line for line in inspect.getsource(module).splitlines()
                    if "cluster._" in line or 'cluster, "_' in line], module.__name__
    with cumulo.connect(workers=1, threads_per_worker=1, budget=5.0) as cluster:
        assert isinstance(cluster, Watched) and isinstance(cluster, Metered) and isinstance(cluster, Measured)
        assert cluster.budget == 5.0 and cluster.record is not None and cluster.record.id == cluster.id
        assert cluster.usage.record() is not None and cluster.usage.record().id == cluster.id
        assert cluster.watchdog is not None and cluster.watchdog.check() == []  # one pass, nothing to do
