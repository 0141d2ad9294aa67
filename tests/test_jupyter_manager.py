"""The server extension's ClusterManager, tested directly (no Tornado, no Jupyter server)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from cumulo.exceptions import ClusterNotFound, NotOwner, ProviderError, SpecError
from cumulo.jupyter.manager import ClusterManager, day_start
from cumulo.life.lifecycle import Lifecycle
from cumulo.life.owner import start_time
from cumulo.life.registry import Registry

from .conftest import DaskProcesses, wait_for


class FakeCluster:
    """What connect() returns, minus Dask: writes the registry row the way cluster.py does."""

    def __init__(self, registry: Registry, provider: str, name: str, **fields: Any) -> None:
        self.registry = registry
        self.record = registry.create(name, provider, {"provider": provider, **fields}, budget=fields.get("budget"))
        Lifecycle(registry).running(self.record.id, workers=fields.get("workers"),
                                    rate_per_hour=2.0 if provider == "priced" else None)
        self.scaled: list[int] = []
        self.closed = False
        self.status = "running"

    def scale(self, n: int) -> None:
        self.scaled.append(n)

    def close(self) -> None:
        self.closed = True
        self.status = "closed"
        Lifecycle(self.registry).closed(self.record.id)


def fake_connect(calls: list[dict[str, Any]]) -> Any:
    def connect(provider: str, *, name: str, registry: Registry, **fields: Any) -> FakeCluster:
        calls.append({"provider": provider, "name": name, **fields})
        if fields.get("gpu") == "unobtainium":
            raise ProviderError("no capacity for unobtainium anywhere; try an H100")
        return FakeCluster(registry, provider, name, **fields)

    return connect


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def manager(registry: Registry) -> Any:
    calls: list[dict[str, Any]] = []
    m = ClusterManager(registry, connect=fake_connect(calls))
    m.calls = calls  # type: ignore[attr-defined]
    yield m
    m.close_owned()


def test_launch_validates_like_connect_and_owns_the_cluster(manager: ClusterManager) -> None:
    card = manager.launch({"provider": "local", "workers": 2, "budget": 5, "idle_timeout": "20m", "name": "etl"})
    assert card["state"] == "launching" and card["owned_by"] == "server"
    cluster = manager.wait_launch("etl", timeout=10)
    assert isinstance(cluster, FakeCluster)
    # the spec reached connect() normalised by ClusterSpec (budget float, idle timeout in seconds)
    assert manager.calls == [{"provider": "local", "name": "etl", "workers": 2, "budget": 5.0,  # type: ignore[attr-defined]
                              "idle_timeout": 1200.0, "spot": False}]
    rows = manager.list(live=False)["clusters"]
    assert [(r["name"], r["state"], r["owned_by"]) for r in rows] == [("etl", "running", "server")]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"provider": "local", "workers": -1}, "workers=-1"),
        ({"provider": "local", "workers": "many"}, "whole number"),
        ({"provider": "local", "budget": 0}, "budget"),
        ({"provider": "local", "idle_timeout": "soon"}, "idle_timeout"),
        ({"provider": "local", "colour": "red"}, "unknown cluster spec field"),
        ({"provider": "local", "name": "Bad Name"}, "not valid"),
        ({"provider": "local", "env": {"API_KEY": "x"}}, "looks like a secret"),
        ({"provider": "nowhere"}, "unknown provider"),
        ({"provider": "address", "address": "tcp://127.0.0.1:8786"}, "cumulo.connect('tcp://"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_launch_requests_are_refused_before_anything_starts(
    manager: ClusterManager, body: Any, words: str
) -> None:
    with pytest.raises(SpecError, match=words if words.isidentifier() else None) as info:
        manager.launch(body)
    assert words in str(info.value)
    assert manager.calls == []  # type: ignore[attr-defined]
    assert manager.list(live=False)["clusters"] == []


def test_a_taken_name_is_refused(manager: ClusterManager) -> None:
    manager.launch({"provider": "local", "name": "dup"})
    manager.wait_launch("dup", timeout=10)
    with pytest.raises(SpecError, match="already open"):
        manager.launch({"provider": "local", "name": "dup"})


def test_generated_names_are_valid_and_distinct(manager: ClusterManager) -> None:
    a = manager.launch({"provider": "local"})["name"]
    b = manager.launch({"provider": "local"})["name"]
    assert a != b and a.startswith("local-")
    manager.wait_launch(a, timeout=10)
    manager.wait_launch(b, timeout=10)


def test_failed_launch_shows_its_error_then_can_be_dismissed(manager: ClusterManager) -> None:
    manager.launch({"provider": "local", "name": "nogpu", "gpu": "unobtainium"})
    assert manager.wait_launch("nogpu", timeout=10) is None
    [row] = manager.list(live=False)["clusters"]
    assert row["state"] == "failed" and "no capacity for unobtainium" in row["error"]
    assert manager.stop("nogpu")["state"] == "failed"
    assert manager.list(live=False)["clusters"] == []


def test_scale_owned_cluster_and_refuse_others(manager: ClusterManager, registry: Registry) -> None:
    manager.launch({"provider": "local", "name": "mine", "workers": 1})
    cluster = manager.wait_launch("mine", timeout=10)
    assert manager.scale("mine", {"workers": 3}) == {"name": "mine", "workers": 3}
    assert cluster.scaled == [3]
    registry.create("theirs", "local", {}, state="running")
    with pytest.raises(NotOwner, match="scale it there"):
        manager.scale("theirs", {"workers": 2})
    with pytest.raises(ClusterNotFound, match="no open cluster named 'ghost'"):
        manager.scale("ghost", {"workers": 2})
    for bad in ({}, {"workers": -1}, {"workers": True}, {"workers": 10**6}, "3"):
        with pytest.raises(SpecError):
            manager.scale("mine", bad)


def test_stop_owned_cluster_closes_it(manager: ClusterManager, registry: Registry) -> None:
    manager.launch({"provider": "local", "name": "gone-soon"})
    cluster = manager.wait_launch("gone-soon", timeout=10)
    row = manager.stop("gone-soon")
    assert cluster.closed and row["state"] == "closed"
    with pytest.raises(ClusterNotFound):
        manager.stop("gone-soon")
    # closed today: still listed, folded by the front end
    [listed] = manager.list(live=False)["clusters"]
    assert listed["state"] == "closed" and manager.list(live=False)["totals"]["running"] == 0


def test_stop_a_cluster_started_by_another_process(
    registry: Registry, dask_processes: DaskProcesses
) -> None:
    """A kernel's cluster (here: a scheduler started by the CLI) is stopped through its provider."""
    rec = registry.create("kernels", "local", {}, state="running", address=dask_processes.address)
    pid = dask_processes.scheduler.pid  # an owner is a process identity: its PID and its start time
    registry.update(rec.id, owner_pid=pid, owner_started=start_time(pid), rate_per_hour=1.2)
    manager = ClusterManager(registry)
    assert manager.list(live=False)["clusters"][0]["owned_by"] == "kernel"
    row = manager.stop("kernels")
    assert row["state"] == "closed"
    wait_for(lambda: dask_processes.scheduler.poll() is not None, timeout=20, what="scheduler to exit")
    assert any(kind == "stop-requested" for _, kind, _ in registry.events(rec.id))
    final = registry.get(rec.id)  # the last spend reading is kept as the final cost
    assert final.cost is not None and final.cost > 0 and final.cost_kind == "estimate"
    assert row["spent"] == final.cost


def test_money_totals_and_spend_today(registry: Registry) -> None:
    manager = ClusterManager(registry)
    priced = registry.create("priced", "lambda", {}, state="running")
    registry.update(priced.id, rate_per_hour=3.0, budget=10.0)
    registry.create("free", "local", {}, state="running")
    created = registry.get(priced.id).created
    now = created + 3600
    listing = manager.list(now=now, live=False)
    by_name = {r["name"]: r for r in listing["clusters"]}
    assert by_name["priced"]["spent"] == pytest.approx(3.0, rel=0.05)
    assert by_name["priced"]["cost_kind"] == "estimate"
    assert by_name["priced"]["budget_used"] == pytest.approx(0.3, rel=0.05)
    assert by_name["free"]["spent"] is None and by_name["free"]["cost_kind"] == "none"  # "no rate set", never $0
    # "today" starts at local midnight: an hour that began before it counts only from then (seen failing when
    # the suite ran in the hour before midnight)
    hours = (now - max(created, day_start(now))) / 3600
    assert listing["totals"] == {"running": 2, "rate_per_hour": 3.0, "unpriced": 1,
                                 "spent_today": pytest.approx(3.0 * hours, rel=0.05, abs=0.01)}
    # two days later only today's hours count towards "spent today"
    later = created + 2 * 86400
    today = manager.list(now=later, live=False)
    hours_today = (later - day_start(later)) / 3600
    assert today["totals"]["spent_today"] == pytest.approx(3.0 * hours_today, rel=0.01, abs=0.01)


def test_local_cluster_of_a_dead_kernel_is_reported_lost(registry: Registry) -> None:
    rec = registry.create("orphan", "local", {}, state="running")
    registry.update(rec.id, owner_pid=2**22 + 12345)  # no such process
    [row] = ClusterManager(registry).list(live=False)["clusters"]
    assert row["state"] == "lost"


def test_usage_of_unknown_and_known_clusters(manager: ClusterManager) -> None:
    with pytest.raises(ClusterNotFound):
        manager.usage("nobody")
    manager.launch({"provider": "local", "name": "used"})
    manager.wait_launch("used", timeout=10)
    usage = manager.usage("used")
    assert usage["cluster"]["name"] == "used"
    assert usage["events"][0]["kind"] == "created"
    json.dumps(usage, allow_nan=False)


def test_prices_are_plain_json(manager: ClusterManager) -> None:
    offers = manager.prices()["offers"]
    assert offers and {"provider", "instance_type", "gpu_model", "on_demand_per_hour", "source"} <= set(offers[0])
    json.dumps(offers, allow_nan=False)
    h100 = manager.prices(gpu="H100")["offers"]
    assert h100 and all("H100" in o["gpu_model"] for o in h100)


def test_reap_runs_the_guards_on_the_registry(registry: Registry) -> None:
    seen: list[Any] = []

    def reap(reg: Registry, *, dry_run: bool) -> list[str]:
        seen.append((reg, dry_run))
        return ["stale"]

    assert ClusterManager(registry, reap=reap).reap() == ["stale"]
    assert seen == [(registry, False)]


def test_close_owned_stops_what_the_server_launched(manager: ClusterManager) -> None:
    manager.launch({"provider": "local", "name": "a"})
    manager.launch({"provider": "local", "name": "b"})
    a, b = manager.wait_launch("a", timeout=10), manager.wait_launch("b", timeout=10)
    assert sorted(manager.close_owned()) == ["a", "b"]
    assert a.closed and b.closed


@pytest.mark.slow
def test_real_local_cluster_from_the_server(registry: Registry) -> None:
    """The real cumulo.connect on a thread of the manager, as the Jupyter server runs it."""
    manager = ClusterManager(registry)
    try:
        manager.launch({"provider": "local", "name": "real", "workers": 1, "threads_per_worker": 1})
        cluster = manager.wait_launch("real", timeout=120)
        assert cluster is not None, manager.list(live=False)
        row = manager.list()["clusters"][0]
        assert row["state"] == "running" and row["owned_by"] == "server" and row["address"].startswith("tls://")
        assert registry.find_open("real").owner_pid == os.getpid()  # the server process owns it
        manager.scale("real", {"workers": 2})
        wait_for(lambda: len(cluster.client.scheduler_info(n_workers=-1)["workers"]) == 2, timeout=60,
                 what="second worker")
        assert manager.stop("real")["state"] == "closed"
    finally:
        manager.close_owned()
    assert time.time() - registry.latest("real").created < 300


@pytest.mark.slow
def test_a_kernel_that_reattached_and_exited_leaves_the_servers_cluster_running(registry: Registry) -> None:
    import subprocess
    import sys

    manager = ClusterManager(registry)
    try:
        manager.launch({"provider": "local", "name": "shared", "workers": 1, "threads_per_worker": 1})
        assert manager.wait_launch("shared", timeout=120) is not None
        code = "import cumulo; print(cumulo.connect(name='shared').status)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ})
        assert out.stdout.strip() == "running", out.stderr[-2000:]
        assert registry.latest("shared").state == "running"
    finally:
        manager.close_owned()


def test_reap_with_the_real_guards_marks_a_dead_kernels_cluster(registry: Registry) -> None:
    """The server's timer calls cumulo.guards.reap: a row whose kernel is gone and lease expired is acted on."""
    rec = registry.create("abandoned", "local", {}, state="running", address="tcp://127.0.0.1:9",
                          lease_seconds=1.0)
    registry.update(rec.id, owner_pid=2**22 + 4321, heartbeat=time.time() - 600)
    reaped = ClusterManager(registry).reap()
    assert [r.name for r in reaped] == ["abandoned"]
    assert not registry.get(rec.id).is_open


def test_only_what_the_server_owns_and_can_scale_offers_scale(manager: ClusterManager, registry: Registry) -> None:
    """The card's Scale follows the row: the server scales only what it launched, and only where the
    provider's class flag ``can_scale`` allows (an ssh:// cluster is what its hosts are)."""
    manager.launch({"provider": "local", "name": "mine"})
    manager.wait_launch("mine", timeout=10)
    # ssh is launchable from the sidebar: the form's hosts field is the launch target
    manager.launch({"provider": "ssh", "name": "hosts", "address": "ssh://alice@gpu1,gpu2", "workers": 2})
    manager.wait_launch("hosts", timeout=10)
    assert manager.calls[-1]["provider"] == "ssh://alice@gpu1,gpu2"  # type: ignore[attr-defined]
    registry.create("theirs", "local", {}, state="running")
    rows = {r["name"]: r for r in manager.list(live=False)["clusters"]}
    assert rows["mine"]["scalable"] is True
    assert rows["hosts"]["owned_by"] == "server" and rows["hosts"]["scalable"] is False  # ssh cannot scale
    assert rows["theirs"]["scalable"] is False  # only its owner scales it
    with pytest.raises(SpecError, match="is for provider 'gateway', not 'ssh'"):
        manager.launch({"provider": "ssh", "name": "nohosts", "address": "gateway://h:1"})


def test_the_id_from_cumulo_ls_names_a_cluster_too(manager: ClusterManager, registry: Registry) -> None:
    manager.launch({"provider": "local", "name": "by-id", "workers": 1})
    cluster = manager.wait_launch("by-id", timeout=10)
    cid = cluster.record.id
    assert manager.scale(cid, {"workers": 2}) == {"name": "by-id", "workers": 2} and cluster.scaled == [2]
    assert manager.usage(cid)["cluster"]["name"] == "by-id"
    assert manager.stop(cid)["state"] == "closed" and cluster.closed
    assert manager.usage(cid)["final"] is False  # closed without a ledger (a fake cluster): nothing kept
