"""connect() against real Dask processes: the embedded default, by address (tcp, TLS), async use."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import dask
import dask.dataframe as dd
import pytest
from distributed import Client

import cumulo
from cumulo.exceptions import ClusterLost, ConnectTimeout, InsecureAddress, SpecError
from cumulo.life.registry import Registry

from .conftest import DaskProcesses, free_port, live_children, wait_for, wait_for_workers
from .tlsutil import make_tls_files


def _children() -> set[int]:
    return {p.pid for p in live_children()}


def test_default_local_cluster_runs_a_dataframe_job_and_closes() -> None:
    before = _children()
    cluster = cumulo.connect(workers=2, threads_per_worker=1, name="unit")
    try:
        assert cluster.status == "running"
        assert cluster.backend == "pandas"  # no GPU on this machine
        assert dask.config.get("dataframe.backend") == "pandas"
        info = cluster.info()
        assert info["workers"] == 2 and info["threads"] == 2 and info["gpus"] == 0
        assert cluster.client.scheduler.address.startswith("tls://127.0.0.1:")  # per-cluster TLS by default
        df = dd.from_dict({"k": [i % 3 for i in range(300)], "v": list(range(300))}, npartitions=6)
        totals = df.groupby("k").v.sum().compute()
        assert totals.to_dict() == {k: sum(v for v in range(300) if v % 3 == k) for k in range(3)}
        row = Registry().find_open("unit")
        assert row is not None and row.state == "running" and row.workers == 2 and row.backend == "pandas"
        assert "unit" in repr(cluster) and "backend=pandas" in repr(cluster)
        html = cluster._repr_html_()
        assert "Workers" in html and "pandas" in html and cluster.dashboard_link in html
        assert len(_children() - before) >= 2  # two worker processes
    finally:
        cluster.close()
    assert cluster.status == "closed"
    assert "status=closed" in repr(cluster) and "closed" in cluster._repr_html_()  # still displayable
    assert Registry().find_open("unit") is None
    assert Registry().latest("unit").state == "closed"
    wait_for(lambda: not (_children() - before), timeout=10, what="worker processes to exit after close()")


def test_context_manager_and_scale() -> None:
    with cumulo.connect(workers=1, threads_per_worker=1) as cluster:
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=30)
        assert cluster.info()["workers"] == 2
        with pytest.raises(SpecError, match="between 0 and"):
            cluster.scale(-1)
        with pytest.raises(SpecError, match="minimum must not exceed maximum"):
            cluster.adapt(3, 1)
        adaptive = cluster.adapt(1, 2)
        assert (adaptive.minimum, adaptive.maximum) == (1, 2)
        adaptive.stop()
    assert cluster.status == "closed"


def test_async_use() -> None:
    async def main() -> int:
        async with cumulo.connect(workers=1, threads_per_worker=1, asynchronous=True) as cluster:
            assert cluster.status == "running"
            future = cluster.client.submit(sum, [1, 2, 3])
            result = await future
            await cluster.scale(1)
            return result

    assert asyncio.run(main()) == 6


def test_attach_by_tcp_address_leaves_foreign_scheduler_running(dask_processes: DaskProcesses) -> None:
    cluster = cumulo.connect(dask_processes.address, name="shared")
    try:
        assert cluster.provider == "address"
        assert cluster.client.submit(lambda x: x + 1, 41).result() == 42
        with pytest.raises(cumulo.exceptions.NotOwner, match="started outside cumulo"):
            cluster.scale(3)
    finally:
        cluster.close()
    row = Registry().latest("shared")
    assert row.state == "closed" and "outside cumulo" in row.note
    assert dask_processes.scheduler.poll() is None, "closing an attached cluster must not stop its scheduler"
    with Client(dask_processes.address, timeout=10, set_as_default=False) as c:
        assert c.submit(lambda: 7).result() == 7


def test_attach_over_tls_with_certificates_made_here(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    procs = DaskProcesses(tmp_path, workers=1, tls=tls)
    try:
        from distributed.security import Security

        sec = Security(tls_ca_file=tls["ca_file"], tls_client_cert=tls["cert"], tls_client_key=tls["key"],
                       require_encryption=True)
        wait_for_workers(procs.address, 1, security=sec)
        with pytest.raises(SpecError, match="no client certificates"):
            cumulo.connect(procs.address)
        with cumulo.connect(procs.address, security=tls) as cluster:
            assert cluster.client.scheduler.address.startswith("tls://")
            assert cluster.client.submit(pow, 2, 10).result() == 1024
    finally:
        procs.stop()


def test_tls_files_from_config(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    procs = DaskProcesses(tmp_path, workers=1, tls=tls)
    try:
        from distributed.security import Security

        # a refused loopback port fails at once now: wait until the scheduler listens
        wait_for_workers(procs.address, 1, security=Security(tls_ca_file=tls["ca_file"], tls_client_cert=tls["cert"],
                                                             tls_client_key=tls["key"], require_encryption=True))
        with dask.config.set({"cumulo.tls.ca-file": tls["ca_file"], "cumulo.tls.cert": tls["cert"],
                              "cumulo.tls.key": tls["key"]}):
            with cumulo.connect(procs.address) as cluster:
                cluster.wait_for_workers(1, timeout=60)
                assert cluster.client.submit(len, "abc").result() == 3
    finally:
        procs.stop()


def test_scheduler_killed_under_attached_cluster(tmp_path: Path) -> None:
    procs = DaskProcesses(tmp_path, workers=1)
    try:
        wait_for_workers(procs.address, 1)
        cluster = cumulo.connect(procs.address, name="fragile")
        procs.scheduler.kill()
        procs.scheduler.wait(10)
        with pytest.raises(ClusterLost, match="stopped answering"):
            cluster.info()
        assert Registry().latest("fragile").state == "lost"
        cluster.close()  # must not hang or raise once the scheduler is gone
        assert cluster.status == "closed"
    finally:
        procs.stop()


@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1:8786", "has no scheme"),
        ("tcp://127.0.0.1", "malformed"),
        ("tcp://127.0.0.1:notaport", "malformed"),
        ("http://127.0.0.1:8786", "scheme 'http'"),
        ("tcp://", "malformed"),
    ],
)
def test_malformed_addresses(address: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        cumulo.connect(address)
    assert Registry().list() == []


def test_plain_tcp_off_loopback_is_refused_without_traffic() -> None:
    t0 = time.monotonic()
    # an attempt would wait the whole connect timeout (10.1.2.3 does not answer): a bound of half of it tells
    with dask.config.set({"distributed.comm.timeouts.connect": "60s"}), \
            pytest.raises(InsecureAddress, match="tls://"):
        cumulo.connect("tcp://10.1.2.3:8786")
    assert time.monotonic() - t0 < 30, "the refusal must come before any connection attempt"
    assert Registry().latest("x") is None


def test_insecure_remote_allowed_only_when_asked() -> None:
    from cumulo.providers.address import AddressProvider

    AddressProvider(allow_insecure=True).check("tcp://10.1.2.3:8786", None)  # explicit opt-in: no refusal
    with dask.config.set({"cumulo.connect.allow-insecure-remote": True}):
        AddressProvider().check("tcp://10.1.2.3:8786", None)
    with pytest.raises(InsecureAddress):
        AddressProvider().check("tcp://10.1.2.3:8786", None)
    AddressProvider().check("tcp://localhost:8786", None)
    AddressProvider().check("tcp://[::1]:8786", None)


def test_unreachable_scheduler_times_out_cleanly() -> None:
    import socket

    before = _children()
    with socket.socket() as silent:  # listens, never answers (a closed port now fails at once instead)
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        with dask.config.set({"cumulo.connect.timeout": "2s"}):
            t0 = time.monotonic()
            with pytest.raises(ConnectTimeout, match="no Dask scheduler answered"):
                cumulo.connect(f"tcp://127.0.0.1:{port}", name="nowhere")
            # the 2 s applied (it takes 2 s + the 5 s grace for the handshake here): the default 30 s would take 35 s
            assert time.monotonic() - t0 < 30
    row = Registry().latest("nowhere")
    assert row.state == "failed" and "no Dask scheduler answered" in row.note
    assert not (_children() - before)


def test_local_start_timeout_leaves_nothing_running() -> None:
    before = _children()
    with dask.config.set({"cumulo.connect.timeout": "0.05s"}):
        with pytest.raises(ConnectTimeout, match="did not start"):
            cumulo.connect(workers=2, name="slow")
    assert Registry().latest("slow").state == "failed"
    wait_for(lambda: not (_children() - before), timeout=10, what="no processes left after a failed start")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workers": -1}, "out of range"),
        ({"workers": 10**6}, "almost surely a typo"),
        ({"workers": 2.5}, "whole number"),
        ({"threads_per_worker": 0}, "unable to run tasks"),
        ({"memory_limit": "lots"}, "not a size"),
        ({"budget": -5}, "positive number of dollars"),
        ({"idle_timeout": "soon"}, "not a duration"),
        ({"name": "Bad Name!"}, "not valid"),
        ({"env": {"API_KEY": "x"}}, "looks like a secret"),
        ({"options": {"api_token": "x"}}, "looks like a secret"),
    ],
)
def test_bad_sizes_and_fields(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        cumulo.connect(**kwargs)


def test_unknown_target_and_provider() -> None:
    with pytest.raises(SpecError, match="unknown connect\\(\\) target 'mars'"):
        cumulo.connect("mars")


def test_unknown_name() -> None:
    with pytest.raises(cumulo.exceptions.ClusterNotFound, match="no open cluster named 'ghost'.*connect\\('local'"):
        cumulo.connect(name="ghost")


def test_same_name_twice_in_one_process_reattaches() -> None:
    with cumulo.connect(workers=1, name="again") as first:
        second = cumulo.connect("local", name="again")
        assert second.client.scheduler.address == first.client.scheduler.address
        assert not second.owner
        second.disconnect()
        assert first.info()["workers"] == 1


def test_clusters_table_lists_open_and_closed() -> None:
    with cumulo.connect(workers=1, name="listed"):
        table = cumulo.clusters()
        row = table[table.name == "listed"].iloc[0]
        assert row.state == "running" and row.provider == "local" and row.workers == 1 and row.backend == "pandas"
    table = cumulo.clusters()
    assert table[table.name == "listed"].iloc[0].state == "closed"
    assert list(table.columns[:8]) == ["name", "provider", "address", "workers", "gpus", "backend", "state", "age"]


def test_current_cluster() -> None:
    with cumulo.connect(workers=1) as cluster:
        assert cumulo.current() is cluster
    with pytest.raises(cumulo.exceptions.ClusterNotFound):
        cumulo.current()


def test_registry_holds_no_process_environment_secrets(monkeypatch: pytest.MonkeyPatch, registry_path: Path) -> None:
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-9f8e7d6c5b4a")
    with cumulo.connect(workers=1, env={"OMP_NUM_THREADS": "1"}):
        pass
    raw = b"".join(p.read_bytes() for p in registry_path.parent.glob("registry.db*"))
    assert b"tok-9f8e7d6c5b4a" not in raw
    assert os.environ["SOME_SERVICE_TOKEN"] == "tok-9f8e7d6c5b4a"


INTERRUPTED = """
import os, signal, sys, cumulo
# Ctrl-C raises KeyboardInterrupt, as in a terminal or a kernel, even where the test run was started in the
# background by a shell without job control (whose children inherit SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
print("starting", flush=True)
try:
    cumulo.connect(workers=2, name="interrupted")
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("not interrupted", flush=True)
"""


def test_ctrl_c_during_connect_stops_what_started(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    import psutil

    slow = tmp_path / "slow_preload.py"
    slow.write_text("import time\ntime.sleep(8)\n")  # every worker takes 8 s to start
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{slow}"]'}
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "starting"
        parent = psutil.Process(proc.pid)
        workers = wait_for(lambda: [c for c in parent.children(recursive=True)
                                    if "spawn_main" in " ".join(c.cmdline())] or None, timeout=60,
                           what="worker processes to be spawned")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 3
        assert "interrupted" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), timeout=30,
             what="the interrupted connect's workers to exit")
    assert Registry().latest("interrupted").state == "failed"


# -- what a newcomer types (issue 21) -------------------------------------------------------------


def test_dask_argument_names_start_the_cluster_they_describe() -> None:
    with cumulo.connect(n_workers=2, threads_per_worker=1, memory_limit="1GiB", name="dasknames") as cluster:
        info = cluster.info()
        assert info["workers"] == 2 and info["threads"] == 2
        assert cluster.spec.workers == 2
    assert Registry().latest("dasknames").workers == 2


def test_a_misspelt_argument_names_the_nearest_one_and_starts_nothing() -> None:
    before = _children()
    with pytest.raises(SpecError, match=r"unknown argument budgett= \(did you mean 'budget'\?\)"):
        cumulo.connect(budgett=5)
    with pytest.raises(SpecError, match=r"workerz= \(did you mean 'workers'\?\)"):
        cumulo.connect("local", workerz=2, name="typo")
    assert Registry().list() == [] and _children() == before


def test_a_misspelt_target_names_the_nearest_provider() -> None:
    with pytest.raises(SpecError, match=r"unknown connect\(\) target 'lamda' \(did you mean 'lambda'\?\)"):
        cumulo.connect("lamda")
    with pytest.raises(SpecError, match=r"unknown address scheme 'shh' .*\(did you mean 'ssh'\?\)"):
        cumulo.connect("shh://me@host")
