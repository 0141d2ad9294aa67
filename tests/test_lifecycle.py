"""The lifecycle as the one owner of a cluster's state, driven through its fault paths.

Real local clusters and real CLI processes where a cluster runs; a fault-injecting
provider (tests/faulty_provider.py) where what matters is what a provider reports.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest

import cumulo
from cumulo.life import reaper
from cumulo.cli import main
from cumulo.exceptions import ClusterLost, InsecureAddress, ProviderError, SpecError, TerminateError
from cumulo.jupyter.manager import ClusterManager
from cumulo.life.lifecycle import FINAL, OPEN, TRANSITIONS, Lifecycle, State
from cumulo.providers import Orphan, get_provider
from cumulo.life.registry import Registry

from . import faulty_provider
from .conftest import BIN, wait_for


@pytest.fixture(autouse=True)
def faulty() -> None:
    faulty_provider.register()
    faulty_provider.ORPHANS.clear()


def test_the_transition_table_never_leaves_a_final_state() -> None:
    assert all(not TRANSITIONS[s] for s in FINAL)
    assert State.STOP_FAILED in OPEN and State.STOP_FAILED.label == "stop failed: may still bill"
    registry = Registry()
    lifecycle = Lifecycle(registry)
    rec = registry.create("t", "local", {})
    assert lifecycle.closed(rec.id, state=State.FAILED, note="never started")
    assert not lifecycle.running(rec.id)  # nothing reopens a final row
    with pytest.raises(TypeError, match="lifecycle"):
        registry.update(rec.id, state="running")


def test_a_failed_launch_whose_cleanup_fails_stays_open_and_visible(tmp_path: Path) -> None:
    """Fault 2: it used to be closed as 'failed' while its instances still billed."""
    blocker = tmp_path / "api-down"
    blocker.write_text("x")
    log = tmp_path / "stopped"
    options = {"fail_launch": True, "stop_fails_while": str(blocker), "stopped_log": str(log)}
    with pytest.raises(TerminateError, match="may still bill"):
        cumulo.connect(faulty_provider.NAME, name="half", options=options)
    registry = Registry()
    rec = registry.latest("half")
    assert rec is not None and rec.state == "stop-failed" and rec.is_open and rec.may_bill
    assert "may still bill" in (rec.note or "")
    table = cumulo.clusters()
    assert table.loc[table["name"] == "half", "state"].item() == "stop failed: may still bill"
    row = next(r for r in ClusterManager(registry).list(live=False)["clusters"] if r["name"] == "half")
    assert row["stoppable"] and row["may_bill"]
    # the reaper retries it; while the API is down it stays open and says so
    done = reaper.sweep(registry, orphans=False).clusters
    assert [d.name for d in done] == ["half"] and done[0].failed
    assert registry.get(rec.id).state == "stop-failed"
    blocker.unlink()  # the API is back
    done = reaper.sweep(registry, orphans=False).clusters
    assert [d.action for d in done] == ["stopped"]
    assert registry.get(rec.id).state == "closed"
    assert log.read_text().split()[0] == f"thing-{rec.id}"
    assert [r.state for r in registry.resources(cluster_id=rec.id)] == ["terminated"]


def test_a_failed_launch_that_cleaned_up_is_failed_with_its_reason(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProviderError, match="failed half way"):
        cumulo.connect(faulty_provider.NAME, name="broken", options={"fail_launch": True})
    rec = Registry().latest("broken")
    assert rec is not None and rec.state == "failed" and "failed half way" in (rec.note or "")
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "failed half way" in out  # `cumulo ls` shows why
    assert "NaN" not in out and "nan" not in out.split()


def test_refusals_before_anything_started_leave_no_row() -> None:
    """Fault 18: InsecureAddress, SpecError from a preflight: no clutter in `cumulo ls`."""
    with pytest.raises(InsecureAddress):
        cumulo.connect("tcp://10.1.2.3:8786")
    with pytest.raises(SpecError, match="refused before anything started"):
        cumulo.connect(faulty_provider.NAME, options={"refuse": True})
    with pytest.raises(SpecError):
        cumulo.connect(workers="two")
    assert Registry().list() == []


def test_ls_shows_whole_numbers_as_integers(capsys) -> None:  # type: ignore[no-untyped-def]
    registry = Registry()
    lifecycle = Lifecycle(registry)
    a = registry.create("a", "local", {})
    lifecycle.running(a.id, workers=3, gpus=0)
    registry.create("b", "local", {})  # starting: no sizes yet
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    line_a = next(line for line in out.splitlines() if line.startswith("   a") or line.split()[:1] == ["a"])
    assert " 3 " in f" {line_a} " and "3.0" not in out and "NaN" not in out
    table = cumulo.clusters()
    assert str(table["workers"].dtype) == "Int64"


def _running(registry: Registry, name: str, options: dict) -> str:  # type: ignore[type-arg]
    lifecycle = Lifecycle(registry)
    rec = lifecycle.begin(name, get_provider(faulty_provider.NAME), {"options": options})
    lifecycle.checkpoint(rec, faulty_provider.NAME).resource("thing", f"thing-{rec.id}", state="billing")
    lifecycle.running(rec.id, workers=1)
    return rec.id


def test_down_all_tries_every_cluster_and_fails_loudly(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Fault 6: `cumulo down --all` used to stop at the first failure."""
    blocker = tmp_path / "api-down"
    blocker.write_text("x")
    registry = Registry()
    stuck = _running(registry, "stuck", {"stop_fails_while": str(blocker)})
    fine = _running(registry, "fine", {})
    assert main(["down", "--all"]) == 1
    err = capsys.readouterr().err
    assert "FAILED to stop stuck" in err and "may still bill" in err
    assert registry.get(fine).state == "closed"
    assert registry.get(stuck).state == "stop-failed"
    blocker.unlink()
    assert main(["down", "stuck"]) == 0
    assert registry.get(stuck).state == "closed"


def test_a_starting_cluster_whose_owner_died_is_stopped_by_the_server(tmp_path: Path) -> None:
    """Fault 3: a kernel restarted during a long boot left a 'starting' row nobody reaped."""
    registry = Registry()
    log = tmp_path / "stopped"
    lifecycle = Lifecycle(registry)
    rec = lifecycle.begin("booting", get_provider(faulty_provider.NAME), {"options": {"stopped_log": str(log)}})
    lifecycle.checkpoint(rec, faulty_provider.NAME).resource("thing", f"thing-{rec.id}", state="booting")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    registry.update(rec.id, owner_pid=dead.pid)
    manager = ClusterManager(registry)
    row = next(r for r in manager.list(live=False)["clusters"] if r["name"] == "booting")
    assert row["stoppable"], "the card of a starting cluster can always be stopped"
    with dask.config.set({"cumulo.guards.lease-grace": "60s"}):
        assert manager.reap() == []  # within the grace: its owner may just be slow
        registry.update(rec.id, heartbeat=time.time() - 120)
        done = manager.reap()
    assert [getattr(d, "name", None) for d in done] == ["booting"]
    assert "died while it was starting" in done[0].reason
    assert registry.get(rec.id).state == "closed"
    assert log.exists()


def test_the_server_reaper_runs_the_orphan_sweep() -> None:
    """Fault 3: the Jupyter server's periodic reaper never swept provider orphans."""
    orphan = Orphan(provider=faulty_provider.NAME, resource_id="i-1", name="cumulo-x-y-head", cluster_id=None,
                    reason="its cluster is unknown to this registry", status="active", ours=False)
    faulty_provider.ORPHANS.append(orphan)
    done = ClusterManager(Registry()).reap()
    assert orphan in done


STOP_FROM_A_TERMINAL = [str(BIN / "cumulo"), "down"]


def test_the_owner_notices_a_stop_elsewhere_within_seconds() -> None:
    """Fault 16: the owning kernel kept saying 'running' and then timed out with a nanny traceback."""
    with dask.config.set({"cumulo.guards.watch-interval": "0.2s", "cumulo.widgets.cell-line-on-connect": False}):
        cluster = cumulo.connect(workers=1, threads_per_worker=1, name="shared-etl")
    try:
        out = subprocess.run([*STOP_FROM_A_TERMINAL, "shared-etl"], capture_output=True, text=True, timeout=120,
                             env=os.environ.copy())
        assert out.returncode == 0, out.stderr
        wait_for(lambda: cluster.status != "running", timeout=15, what="the owner noticing")
        assert cluster.stopped_by is not None and "cumulo down" in cluster.stopped_by
        with pytest.raises(ClusterLost, match="stopped elsewhere.*cumulo down"):
            cluster.info()
    finally:
        cluster.close()
    assert Registry().get(cluster.id).state == "closed"


def test_lifecycle_stop_of_a_scheduler_not_ours_only_detaches(dask_processes) -> None:  # type: ignore[no-untyped-def]
    registry = Registry()
    lifecycle = Lifecycle(registry)
    rec = registry.create("foreign", "address", {"address": dask_processes.address})
    lifecycle.running(rec.id, address=dask_processes.address)
    asyncio.run(lifecycle.stop(registry.get(rec.id), get_provider("address"), why="test"))
    final = registry.get(rec.id)
    assert final.state == "closed" and "detached" in (final.note or "")
    assert dask_processes.scheduler.poll() is None


def test_record_cost_keeps_an_unpriced_clusters_figure_and_never_a_priced_ones() -> None:
    from cumulo.cost.metering import Spend

    registry = Registry()
    lifecycle = Lifecycle(registry)
    free = registry.create("free", "local", {}, state="running")
    priced = registry.create("priced", "local", {}, state="running")
    registry.update(priced.id, rate_per_hour=2.0)
    priced = registry.get(priced.id)
    reading = Spend(1.5, 0.5, "worker-time x configured rate")
    assert lifecycle.record_cost(free, reading)
    assert (registry.get(free.id).cost, registry.get(free.id).cost_kind) == (1.5, "estimate")
    assert not lifecycle.record_cost(priced, reading)  # its spend follows from its row's clock
    assert registry.get(priced.id).cost is None
    assert not lifecycle.record_cost(free, Spend(None, None, "no rate set"))  # "no rate" is never $0
    assert registry.get(free.id).cost == 1.5
    # a reading taken from outside as it stopped the cluster: kept for a priced one, but never over the owner's
    assert lifecycle.record_cost(priced, reading, last_reading=True) and registry.get(priced.id).cost == 1.5
    assert not lifecycle.record_cost(free, Spend(9.0, 1.0, "x"), last_reading=True)
    assert registry.get(free.id).cost == 1.5


def test_detach_drops_the_lease_and_disown_only_from_the_owner() -> None:
    registry = Registry()
    lifecycle = Lifecycle(registry)
    rec = registry.create("held", "local", {}, state="running")  # owned by this process
    registry.update(rec.id, lease_seconds=90.0)
    assert lifecycle.detach(rec.id)
    row = registry.get(rec.id)
    assert row.lease_seconds is None and row.owned_here()
    assert any(kind == "detached" for _, kind, _ in registry.events(rec.id))
    assert lifecycle.detach(rec.id, disown=True)
    assert registry.get(rec.id).owner is None
    other = registry.create("theirs", "local", {}, state="running", owner_pid=1, lease_seconds=90.0)
    assert not lifecycle.detach(other.id, disown=True)  # another process owns it: left as it is
    assert registry.get(other.id).lease_seconds == 90.0
    assert lifecycle.closed(rec.id)
    assert not lifecycle.detach(rec.id, disown=True)  # closed meanwhile
