"""The registry shared by every process: concurrent writers, history, re-attach from another process."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import cumulo
from cumulo.exceptions import ClusterNotFound, RegistryError, SpecError
from cumulo.life.inventory import reconcile
from cumulo.life.lifecycle import Lifecycle, State
from cumulo.life.registry import SCHEMA_VERSION, Registry

from .conftest import wait_for


def _writer(path: str, prefix: str, n: int) -> None:
    registry = Registry(path)
    for i in range(n):
        record = registry.create(f"{prefix}-{i}", "local", {"workers": i % 4})
        Lifecycle(registry).running(record.id, workers=i % 4, address=f"tcp://127.0.0.1:{10000 + i}")
        registry.heartbeat(record.id)
        if i % 2:
            Lifecycle(registry).closed(record.id)


def test_two_processes_write_at_once(registry_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 150
    procs = [ctx.Process(target=_writer, args=(str(registry_path), p, n)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = Registry(registry_path).list()
    assert len(rows) == 2 * n
    assert sum(r.state == "closed" for r in rows) == n
    assert {r.name for r in rows} == {f"{p}-{i}" for p in ("a", "b") for i in range(n)}
    with open(registry_path, "rb") as f:
        assert f.read(16) == b"SQLite format 3\x00"


def _claim(path: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:  # type: ignore[name-defined]
    registry = Registry(path)
    barrier.wait()
    try:
        registry.create("contested", "local")
        results.put("won")
    except SpecError:
        results.put("refused")


def test_an_open_name_is_claimed_once_across_processes(registry_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(registry_path), barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["refused", "refused", "refused", "won"]


def test_closed_rows_are_history_and_names_reusable(registry_path: Path) -> None:
    registry = Registry(registry_path)
    first = registry.create("etl", "local")
    with pytest.raises(SpecError, match="already open"):
        registry.create("etl", "local")
    lifecycle = Lifecycle(registry)
    lifecycle.closed(first.id, note="done")
    second = registry.create("etl", "local")
    assert second.id != first.id
    names = [(r.name, r.state) for r in registry.list()]
    assert ("etl", "closed") in names and ("etl", "starting") in names
    kinds = [kind for _, kind, _ in registry.events(first.id)]
    assert kinds == ["created", "closed"]
    assert lifecycle.running(first.id, workers=3) is False  # a late writer cannot reopen a closed row
    assert registry.get(first.id).state == "closed" and registry.get(first.id).workers is None
    with pytest.raises(TypeError, match="lifecycle"):
        registry.update(first.id, state="running")  # nothing but the lifecycle writes a state
    failed = registry.create("broken", "local")
    assert lifecycle.closed(failed.id, state=State.FAILED, note="never started")
    assert not lifecycle.closed(failed.id, note="closed at exit")  # the first final state and note stick
    assert (registry.get(failed.id).state, registry.get(failed.id).note) == ("failed", "never started")


def test_unwritable_registry_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RegistryError, match="CUMULO_REGISTRY"):
        Registry(blocker / "sub" / "registry.db")


OWNER = textwrap.dedent(
    """
    import sys, cumulo
    cluster = cumulo.connect(workers=1, threads_per_worker=1, name="etl")
    print(cluster.client.scheduler.address, flush=True)
    sys.stdin.readline()
    """
)


def test_reattach_by_name_from_another_process(registry_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ})
    try:
        address = owner.stdout.readline().strip()
        assert address.startswith("tls://127.0.0.1:"), address
        cluster = cumulo.connect(name="etl")
        assert cluster.client.scheduler.address == address
        assert not cluster.owner
        assert cluster.client.submit(lambda: 6 * 7).result() == 42
        with pytest.raises(cumulo.exceptions.NotOwner, match="another process"):
            cluster.scale(2)
        cluster.disconnect()
        # the cluster keeps running for its owner; attaching again works
        again = cumulo.connect(name="etl")
        again.close()  # close() from another process stops the cluster
        assert Registry().latest("etl").state == "closed"
    finally:
        owner.stdin.write("\n")
        owner.stdin.flush()
        owner.wait(60)
    assert owner.returncode == 0


def test_kernel_restart_marks_its_local_cluster_lost(registry_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    address = owner.stdout.readline().strip()
    assert address
    workers = psutil.Process(owner.pid).children(recursive=True)
    assert workers
    owner.kill()  # a kernel restart: no atexit, no close
    owner.wait(30)
    wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), timeout=30,
             what="the killed kernel's worker processes to exit")
    wait_for(lambda: reconcile(Registry()) or Registry().latest("etl").state == "lost", timeout=30,
             what="the dead owner's cluster to be marked lost")
    with pytest.raises(ClusterNotFound, match="last one was lost.*owner process"):
        cumulo.connect(name="etl")


_V1_SCHEMA = """
CREATE TABLE clusters (id TEXT PRIMARY KEY, name TEXT NOT NULL, provider TEXT NOT NULL, spec TEXT NOT NULL
    DEFAULT '{}', address TEXT, dashboard TEXT, state TEXT NOT NULL, owner_pid INTEGER, owner_host TEXT,
    created REAL NOT NULL, updated REAL NOT NULL, closed REAL, heartbeat REAL, lease_seconds REAL,
    workers INTEGER, threads INTEGER, memory INTEGER, gpus INTEGER, gpu_model TEXT, backend TEXT, budget REAL,
    idle_timeout REAL, rate_per_hour REAL, cost REAL, cost_kind TEXT, note TEXT);
CREATE UNIQUE INDEX clusters_one_open_name ON clusters(name) WHERE state IN ('starting', 'running', 'closing');
CREATE TABLE resources (provider TEXT NOT NULL, resource_id TEXT NOT NULL, cluster_id TEXT NOT NULL,
    kind TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (provider, resource_id));
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, cluster_id TEXT NOT NULL, ts REAL NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL);
INSERT INTO clusters (id, name, provider, state, created, updated) VALUES ('abc', 'old', 'lambda', 'running', 1, 1);
PRAGMA user_version = 1;
"""


def test_an_older_schema_is_migrated_forward(registry_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(registry_path) as db:
        db.executescript(_V1_SCHEMA)
    registry = Registry(registry_path)
    with sqlite3.connect(registry_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    old = registry.get("abc")
    assert (old.name, old.state) == ("old", "running")  # rows survive the migration
    assert len(registry.installation_id) == 8  # the table added by v2 exists
    # v2's open-name index covers the new open state: a stop-failed cluster still holds its name
    lifecycle = Lifecycle(registry)
    assert lifecycle._move("abc", State.STOP_FAILED, note="terminate failed")
    with pytest.raises(SpecError, match="already open"):
        registry.create("old", "local")


def test_a_newer_schema_is_refused_naming_both_versions(registry_path: Path) -> None:
    import sqlite3

    Registry(registry_path)
    with sqlite3.connect(registry_path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    with pytest.raises(RegistryError, match=f"schema version {SCHEMA_VERSION + 3}.*version {SCHEMA_VERSION}"):
        Registry(registry_path)


def _open_fresh(folder: str, rounds: int, barrier: multiprocessing.synchronize.Barrier,  # type: ignore[name-defined]
                errors: multiprocessing.Queue, who: int) -> None:  # type: ignore[type-arg]
    for i in range(rounds):
        barrier.wait()  # all processes open the same fresh file at the same moment
        try:
            Registry(Path(folder) / f"fresh-{i}.db").create(f"p{who}-{i}", "local")
        except Exception as exc:  # reported to the test, which fails on any
            errors.put(f"round {i}, process {who}: {type(exc).__name__}: {exc}")


def test_eight_processes_open_one_fresh_registry_at_once(tmp_path: Path) -> None:
    """The first open (WAL switch, schema) of a fresh file by many processes together must not fail."""
    ctx = multiprocessing.get_context("spawn")
    n, rounds = 8, 20
    barrier, errors = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_fresh, args=(str(tmp_path), rounds, barrier, errors, w)) for w in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, failures[:5]
    assert all(p.exitcode == 0 for p in procs)
    for i in range(rounds):
        assert len(Registry(tmp_path / f"fresh-{i}.db").list()) == n
