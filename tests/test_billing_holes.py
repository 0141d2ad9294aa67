"""Billing holes an adversarial review found: limits after disconnect(), reused PIDs, another installation's
sweep, and stop-failed rows of a provider this process does not know. Real processes, bounded polls."""

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
from cumulo.life import guards, owner, reaper
from cumulo.cli import main
from cumulo.life.registry import Registry

from . import detached_provider
from .conftest import ROOT, wait_for

FAST = {"cumulo.guards.interval": "0.2s", "cumulo.cost.sample-interval": "0.2s",
        "cumulo.widgets.cell-line-on-connect": False, "cumulo.guards.budget-warn-at": []}


@pytest.fixture(autouse=True)
def fast_guards():  # type: ignore[no-untyped-def]
    detached_provider.register()
    with dask.config.set(FAST):
        yield


# A kernel that starts two clusters that outlive it, disconnects from both and stays alive.
KERNEL = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import dask
    dask.config.set({{"cumulo.guards.interval": "0.2s", "cumulo.widgets.cell-line-on-connect": False,
                      "cumulo.guards.budget-warn-at": []}})
    from tests import detached_provider
    detached_provider.register()
    import cumulo
    pricey = cumulo.connect("detached-test", name="pricey", budget=0.1, options={{"rate_per_hour": 36.0}})
    pricey.disconnect()  # its budget runs out about 10 s after it started
    idle = cumulo.connect("detached-test", name="idler", idle_timeout="2s")
    idle.disconnect()
    ids = pricey.id, idle.id
    print("READY", *ids, flush=True)
    time.sleep(600)
""")


def _kill_pids(pids: list[int]) -> None:
    for p in pids:
        if detached_provider._alive(p):
            os.kill(p, signal.SIGKILL)


def test_disconnected_clusters_stay_under_their_limits_while_their_kernel_lives(tmp_path: Path) -> None:
    """disconnect() marks the row unowned: the reaper enforces budget and idle though the kernel still runs."""
    proc = subprocess.Popen([sys.executable, "-c", KERNEL.format(root=str(ROOT))], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "kernel.log", "wb"), cwd=str(ROOT), text=True)
    registry = Registry()
    pids: list[int] = []
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("READY"), (tmp_path / "kernel.log").read_text()[-3000:]
        pricey, idle = line.split()[1:]
        pids = [int(r.resource_id) for cid in (pricey, idle) for r in registry.resources(cluster_id=cid)]
        for cid in (pricey, idle):
            row = registry.get(cid)
            assert row.state == "running" and row.owner is None and row.lease_seconds is None
        reaped: dict[str, reaper.Reaped] = {}

        def both_reaped() -> bool:
            reaped.update({r.id: r for r in reaper.reap(registry)})
            return {pricey, idle} <= set(reaped)

        wait_for(both_reaped, timeout=60, interval=0.5, what="budget and idle stops of disconnected clusters")
        assert proc.poll() is None, "the kernel is still alive: its liveness must not shield the clusters"
        assert "budget" in reaped[pricey].reason and reaped[pricey].action == "stopped"
        assert "idle" in reaped[idle].reason and reaped[idle].action == "stopped"
        assert registry.get(pricey).state == registry.get(idle).state == "closed"
        assert all(registry.get(cid).usage for cid in (pricey, idle)), "a reaped cluster keeps its final usage"
        wait_for(lambda: not any(detached_provider._alive(p) for p in pids), what="their processes gone")
    finally:
        proc.kill()
        proc.wait(10)
        _kill_pids(pids)


def test_disconnect_from_a_cluster_another_process_owns_leaves_its_owner_in_charge() -> None:
    cluster = cumulo.connect("detached-test", options={"rate_per_hour": 1.0})
    try:
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            other = owner.this_process().__class__(sleeper.pid, owner.this_process().host,
                                                   owner.start_time(sleeper.pid), owner.boot_id())
            cluster.registry.update(cluster.id, owner_pid=other.pid, owner_started=other.started,
                                    owner_boot=other.boot, lease_seconds=90.0)
            again = cumulo.connect(name=cluster.name)
            again.disconnect()
            row = cluster.registry.get(cluster.id)
            assert row.owner == other and row.lease_seconds == 90.0, "a re-attached kernel disowned the owner"
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        cluster.close()


def test_a_reused_pid_does_not_keep_a_dead_kernel_alive() -> None:
    """The recorded owner PID now belongs to another process (it started later): the owner is gone."""
    cluster = cumulo.connect("detached-test", name="reused", options={"rate_per_hour": 1.0})
    sleeper = subprocess.Popen(["sleep", "120"])  # the process that now holds the dead kernel's PID
    try:
        cluster.watchdog.stop()  # the kernel stops heartbeating, as a dead one would
        started = owner.start_time(sleeper.pid)
        assert started is not None
        reg = cluster.registry
        reg.update(cluster.id, owner_pid=sleeper.pid, owner_started=started - 1000, lease_seconds=120.0,
                   heartbeat=time.time() - 6 * 3600)
        row = reg.get(cluster.id)
        assert row.owner_alive() is False
        assert not guards.watched(row)
        done = reaper.reap(reg)
        assert [(r.name, r.action) for r in done] == [("reused", "stopped")]
        assert "kernel gone" in done[0].reason
        assert reg.get(cluster.id).state == "closed"
        # the same PID with its own start time is a live owner; another boot id is not
        reg2 = Registry(reg.path)
        live = reg2.create("live", "detached-test", {}, state="stop-failed")
        reg2.update(live.id, owner_pid=sleeper.pid, owner_started=started, owner_boot=owner.boot_id())
        assert reg2.get(live.id).owner_alive() is True
        reg2.update(live.id, owner_boot="another-boot")
        assert reg2.get(live.id).owner_alive() is (False if owner.boot_id() else True)
    finally:
        sleeper.kill()
        sleeper.wait()
        cluster.close()


def test_owner_identity_of_this_process_is_alive() -> None:
    me = owner.this_process()
    assert me.started is not None, "Linux publishes process start times in /proc"
    assert owner.alive(me) is True
    assert owner.alive(owner.Owner(me.pid, me.host, me.started + 1, me.boot)) is False
    assert owner.alive(owner.Owner(me.pid, "another-host", me.started, me.boot)) is None


def test_stop_failed_rows_of_an_unknown_provider_are_reported_and_fail_the_reap(
        capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry()
    row = reg.create("ghost", "registered-elsewhere", {}, state="stop-failed", note="terminate timed out")
    done = reaper.reap(reg)
    assert len(done) == 1 and done[0].failed and "not registered in this process" in done[0].action
    assert main(["reap", "--dry-run"]) != 0
    assert main(["reap"]) != 0
    out = capsys.readouterr().out
    assert "ghost" in out and "may still bill" in out and "nothing to reap" not in out
    assert reg.get(row.id).state == "stop-failed"


class _AlwaysFails(detached_provider.DetachedProvider):
    name = "fails-to-stop"

    async def stop(self, record, checkpoint) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("the provider's API is down")


def test_each_failed_retry_keeps_one_note() -> None:
    from cumulo.providers import register_provider

    register_provider(_AlwaysFails.name, _AlwaysFails)
    reg = Registry()
    row = reg.create("stuck", _AlwaysFails.name, {}, state="stop-failed",
                     note="closed by its kernel: stopping failed (RuntimeError: the provider's API is down)")
    for _ in range(3):
        done = reaper.reap(reg)
        assert done and done[0].failed
    note = reg.get(row.id).note or ""
    assert note.count("reaped") == 1 and note.count("stopping failed") == 1, note
    assert reg.get(row.id).state == "stop-failed"
