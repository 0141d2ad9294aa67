"""The gateway provider against a real dask-gateway-server on 127.0.0.1 (no emulator, nothing left behind).

A module-scoped server (UnsafeLocalBackend, SimpleAuthenticator with a password,
`dask scheduler` / `dask worker` from this venv) serves most tests; the test that
kills its gateway mid-session starts one of its own. Every server is killed at
teardown with everything it spawned, schedulers and workers included.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import psutil
import pytest

import cumulo
from cumulo.exceptions import (
    ClusterLost,
    ConnectError,
    CredentialsError,
    InsecureAddress,
    LaunchTimeout,
    SpecError,
    TerminateError,
)
from cumulo.life import reaper
from cumulo.life.registry import Registry

from .conftest import free_port, kernel_then_killed, wait_for

pytest.importorskip("dask_gateway_server", reason="the gateway tests need dask-gateway-server (the test extra)")
dask_gateway = pytest.importorskip("dask_gateway", reason="the gateway provider needs dask-gateway")

BIN = Path(sys.executable).parent
USER = "alice"
PASSWORD = "pw-" + secrets.token_hex(8)
KIND = "gateway-cluster"

_CONFIG = """
from dask_gateway_server.options import Integer, Options, String

c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{port}"
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.cluster_max_workers = 2
c.Backend.cluster_options = Options(
    Integer("worker_cores", default=1, min=1, max=2, label="Worker cores"),
    String("queue", default="default", label="Queue"),
    handler=lambda options: {{"worker_cores": options.worker_cores}},
)
"""


class GatewayServer:
    """A real dask-gateway-server on free loopback ports, in its own folder and process session."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port, api_port = free_port(), free_port()
        self.address = f"gateway://127.0.0.1:{self.port}"
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "dask_gateway_config.py"
        config.write_text(_CONFIG.format(password=PASSWORD, api_port=api_port, port=self.port,
                                         dask=str(BIN / "dask")))
        self.log = folder / "gateway.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([str(BIN / "dask-gateway-server"), "-f", str(config)], cwd=folder,
                                            stdout=log, stderr=log, start_new_session=True)
        self._spawned: dict[int, psutil.Process] = {}
        wait_for(self._healthy, timeout=30, interval=0.1, what=f"the gateway at {self.url} (log: {self.log})")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"dask-gateway-server exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/api/health", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    def _remember(self) -> None:
        """Note every process the server spawned, so that they are killed even once orphaned."""
        try:
            for p in psutil.Process(self.process.pid).children(recursive=True):
                self._spawned[p.pid] = p
        except psutil.Error:
            pass

    def clusters(self, status: Any = None) -> list[str]:
        """Names of this user's gateway clusters (by default those pending or running), asked over its API."""
        self._remember()

        async def ask() -> list[str]:
            auth = dask_gateway.BasicAuth(USER, PASSWORD)
            async with dask_gateway.Gateway(self.url, auth=auth, asynchronous=True) as gateway:
                return [c.name for c in await gateway.list_clusters(status=status)]

        return asyncio.run(ask())

    def stop_cluster(self, name: str) -> None:
        async def stop() -> None:
            auth = dask_gateway.BasicAuth(USER, PASSWORD)
            async with dask_gateway.Gateway(self.url, auth=auth, asynchronous=True) as gateway:
                await gateway.stop_cluster(name)

        asyncio.run(stop())
        wait_for(lambda: name not in self.clusters(["pending", "running", "stopping"]), timeout=30,
                 what=f"gateway cluster {name} to stop")

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would: its proxy goes with it, its clusters' processes linger."""
        self._remember()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def close(self) -> None:
        """Stop the server (it stops its clusters), then kill whatever it spawned that is still alive."""
        self._remember()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for p in self._spawned.values():
            try:
                p.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(list(self._spawned.values()), timeout=10)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    server = GatewayServer(tmp_path_factory.mktemp("gateway"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The right credentials, in dask config (this process) and the environment (subprocesses)."""
    monkeypatch.setenv("DASK_GATEWAY__AUTH__TYPE", "basic")
    monkeypatch.setenv("DASK_GATEWAY__AUTH__KWARGS__USERNAME", USER)
    monkeypatch.setenv("DASK_GATEWAY__AUTH__KWARGS__PASSWORD", PASSWORD)
    with dask.config.set({"gateway.auth.type": "basic", "gateway.auth.kwargs": {"username": USER,
                                                                               "password": PASSWORD}}):
        yield


def _registry_bytes(path: Path) -> bytes:
    """The registry database and its WAL, where a leaked secret would sit."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def _gateway_name(cluster: cumulo.Cluster) -> str:
    return _gateway_name_of(cluster.id)


def test_connect_computes_scales_and_close_stops_the_gateway_cluster(
        gateway: GatewayServer, auth: None, registry_path: Path) -> None:
    import dask.dataframe as dd
    import pandas as pd

    from cumulo.providers.gateway import tls

    cluster = cumulo.connect(gateway.address, workers=1, name="team", options={"worker_cores": 1})
    try:
        name = _gateway_name(cluster)
        assert gateway.clusters() == [name]
        assert cluster.provider == "gateway" and cluster.address == f"{gateway.address}/{name}"
        frame = dd.from_pandas(pd.DataFrame({"x": range(100)}), npartitions=4)
        assert int(frame.x.sum().compute()) == 4950
        assert cluster.client.submit(sum, [1, 2, 3]).result() == 6
        table = cumulo.clusters()
        row = table[table.name == "team"].iloc[0]
        assert (row.provider, row.state, row.address) == ("gateway", "running", cluster.address)
        assert (tls.certs_root() / cluster.id / "cluster-key.pem").stat().st_mode & 0o777 == 0o600
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=60)
        assert cluster.info()["workers"] == 2
        cluster.adapt(minimum=1, maximum=2)  # the gateway's adaptive scaling, from this (non-loop) thread
    finally:
        cluster.close()
    assert gateway.clusters() == []
    record = Registry().latest("team")
    assert record is not None and record.state == "closed"
    assert [r.state for r in Registry().resources(cluster_id=record.id)] == ["stopped"]
    assert not (tls.certs_root() / record.id).exists()
    assert PASSWORD.encode() not in _registry_bytes(registry_path)


def test_reattach_from_another_process_and_cumulo_down_from_the_cli(gateway: GatewayServer, auth: None) -> None:
    from distributed import Client

    from cumulo.providers.gateway import GatewayProvider, tls

    cluster = cumulo.connect(gateway.address, workers=1, name="shared")
    try:
        code = textwrap.dedent("""
            import cumulo
            c = cumulo.connect(name="shared")
            print("RESULT", c.client.submit(sum, [40, 2]).result(), c.provider, c.owner)
        """)
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr[-3000:]
        assert "RESULT 42 gateway False" in other.stdout
        assert gateway.clusters() == [_gateway_name(cluster)]  # the other process only detached

        # without the saved credentials (another machine), the gateway gives them to their owner
        record = Registry().find_open("shared")
        assert record is not None
        tls.remove(record.id)

        async def compute() -> int:
            security = GatewayProvider().security(record)
            async with Client(record.address, security=security, asynchronous=True) as client:
                return await client.submit(sum, [1, 2])

        assert asyncio.run(compute()) == 3

        down = subprocess.run([str(BIN / "cumulo"), "down", "shared"], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr[-3000:]
        assert "stopped shared (gateway" in down.stdout
        assert gateway.clusters() == []
        assert Registry().latest("shared").state == "closed"
        wait_for(lambda: cluster.status != "running", timeout=15, what="the owner to notice the stop")
        with pytest.raises(ClusterLost, match="stopped elsewhere"):
            cluster.info()
    finally:
        cluster.close()


def test_wrong_password_is_a_credentials_error_and_leaves_nothing(gateway: GatewayServer,
                                                                   registry_path: Path) -> None:
    wrong = "wrong-" + secrets.token_hex(6)
    with dask.config.set({"gateway.auth.type": "basic",
                          "gateway.auth.kwargs": {"username": USER, "password": wrong}}):
        with pytest.raises(CredentialsError) as info:
            cumulo.connect(gateway.address, workers=1, name="nope")
    text = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert "HTTP 401" in text and "DASK_GATEWAY__AUTH__KWARGS__PASSWORD" in text and repr(USER) in text
    assert wrong not in text and PASSWORD not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__  # the request (its headers) is not kept
    assert gateway.clusters() == []
    assert Registry().list(include_closed=True) == []
    assert wrong.encode() not in _registry_bytes(registry_path)


def test_invalid_cluster_options_are_spec_errors_in_the_gateways_words(gateway: GatewayServer, auth: None) -> None:
    with pytest.raises(SpecError) as rejected:
        cumulo.connect(gateway.address, workers=1, name="big", options={"worker_cores": 64})
    assert "worker_cores must be <= 2" in str(rejected.value)  # the gateway's own message
    assert "worker_cores, queue" in str(rejected.value)  # and what it accepts
    with pytest.raises(SpecError, match=r"unknown gateway option\(s\) colour: .*worker_cores, queue"):
        cumulo.connect(gateway.address, workers=1, options={"colour": "blue"})
    with pytest.raises(SpecError, match="threads_per_worker"):
        cumulo.connect(gateway.address, workers=1, threads_per_worker=2)
    assert gateway.clusters() == []
    assert Registry().list(include_closed=True) == []  # refused before anything ran: no row left


@pytest.mark.filterwarnings("ignore:Scale request of 3 workers")
def test_a_launch_that_fails_after_the_gateway_created_the_cluster_stops_it(gateway: GatewayServer,
                                                                            auth: None) -> None:
    # this gateway caps clusters at 2 workers (it warns and scales to 2), so 3 never join
    with dask.config.set({"cumulo.gateway.timeout": "8s"}):
        with pytest.raises(LaunchTimeout, match="cap workers per cluster"):
            cumulo.connect(gateway.address, workers=3, name="greedy")
    assert gateway.clusters() == []
    record = Registry().latest("greedy")
    assert record is not None and record.state == "failed"
    assert [r.state for r in Registry().resources(cluster_id=record.id)] == ["stopped"]


def test_gateway_dying_mid_session_fails_clearly_and_nothing_hangs(tmp_path: Path, auth: None) -> None:
    server = GatewayServer(tmp_path / "doomed-gateway")
    try:
        cluster = cumulo.connect(server.address, workers=1, name="doomed")
        assert cluster.client.submit(sum, [1, 1]).result() == 2
        server.kill()
        started = time.monotonic()
        with pytest.raises(ClusterLost, match="stopped answering"):
            cluster.info()
        with pytest.raises(TerminateError) as failed:
            cluster.close()
        message = str(failed.value)
        assert server.address in message and "may still be running" in message
        record = Registry().latest("doomed")
        assert record is not None and record.state == "stop-failed"  # open and visible: it may still bill
        down = subprocess.run([str(BIN / "cumulo"), "down", "doomed"], capture_output=True, text=True, timeout=60)
        assert down.returncode == 1, down.stdout
        assert "could not confirm" in down.stderr and server.address in down.stderr, down.stderr
        assert time.monotonic() - started < 120  # a hang-catcher: it takes about 11 s here
        cluster.disconnect()  # let go of it here; the row stays open until a stop is confirmed
    finally:
        server.close()


def test_gateway_down_at_connect_is_a_connect_error_naming_it(auth: None) -> None:
    address = f"gateway://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConnectError, match=address):
        cumulo.connect(address, workers=1)
    assert time.monotonic() - started < 10
    assert Registry().list(include_closed=True) == []


def test_shutdown_on_close_false_detaches_but_a_budget_still_shuts_down(gateway: GatewayServer, auth: None) -> None:
    with dask.config.set({"cumulo.gateway.shutdown-on-close": False, "cumulo.gateway.rate-per-hour": 3600.0}):
        kept = cumulo.connect(gateway.address, workers=0, name="kept")
        name = _gateway_name(kept)
        kept.close()
        assert gateway.clusters() == [name]  # detached: the gateway cluster runs on
        record = Registry().latest("kept")
        assert record.state == "closed" and record.rate_per_hour == 3600.0
        assert [r.state for r in Registry().resources(cluster_id=record.id)] == ["detached"]
        assert any(kind == "detached" for _, kind, _ in Registry().events(record.id))
        gateway.stop_cluster(name)

        capped = cumulo.connect(gateway.address, workers=0, name="capped", budget=0.01)
        try:
            assert "closed (budget)" in capped.watchdog.check()
            assert capped.status == "closed"
            assert gateway.clusters() == []  # the budget really shut it down
        finally:
            capped.close()
    assert Registry().latest("capped").state == "closed"


def test_addresses_are_checked_before_anything_is_sent(auth: None) -> None:
    from cumulo.providers.gateway.api import target_of

    assert target_of("gateway://127.0.0.1:8000").url == "http://127.0.0.1:8000"
    assert target_of("gateway+https://hub.example.org/services/dask-gateway/").url == \
        "https://hub.example.org/services/dask-gateway"
    with pytest.raises(SpecError) as userinfo:
        target_of("gateway+https://bob:hunter2@example.org")
    assert "hunter2" not in str(userinfo.value)
    with pytest.raises(InsecureAddress, match="gateway\\+https://gateway.example.org:8000"):
        cumulo.connect("gateway://gateway.example.org:8000", workers=1)
    assert Registry().list(include_closed=True) == []


def test_the_provider_imports_without_dask_gateway_and_names_the_extra_when_used() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["dask_gateway"] = None  # as if the gateway extra were not installed
        import cumulo, cumulo.life.reaper
        from cumulo.exceptions import MissingDependency
        from cumulo.providers import provider_class
        assert provider_class("gateway").name == "gateway"
        try:
            cumulo.connect("gateway://127.0.0.1:9", workers=1)
        except MissingDependency as exc:
            print("MISSING", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MISSING" in out.stdout and "pip install 'cumulo[gateway]'" in out.stdout


def test_cluster_options_come_as_the_gateways_form_and_feed_connect(gateway: GatewayServer, auth: None) -> None:
    opts = cumulo.gateway_options(gateway.address)
    assert "worker_cores" in dict(opts) and hasattr(opts, "_widget")  # dask-gateway draws it as a form
    opts.worker_cores = 1
    with cumulo.connect(gateway.address, name="formed", workers=1, options=dict(opts)) as cluster:
        assert cluster.client.submit(lambda: 1 + 1).result() == 2
    with pytest.raises(cumulo.CumuloError):
        cumulo.gateway_options(f"gateway://127.0.0.1:{free_port()}")


def test_the_gateways_options_are_keyword_arguments_of_connect(gateway: GatewayServer, auth: None) -> None:
    with cumulo.connect(gateway.address, name="kwargs", workers=1, worker_cores=2) as cluster:
        assert cluster.spec.options["worker_cores"] == 2
        cores = {w["nthreads"] for w in cluster.client.scheduler_info()["workers"].values()}
        assert cores == {2}
    with pytest.raises(SpecError, match="worker_cores"):  # a misspelt option names the ones the gateway has
        cumulo.connect(gateway.address, name="typo", worker_corse=2)


#: A kernel that connects to the gateway in argv[1] with a budget it is over at once (the rate is in
#: the environment), keep_alive so that its lease does not apply, prints the row id and waits to be killed.
OVER_BUDGET_KERNEL = """
import sys, time
import cumulo
cluster = cumulo.connect(sys.argv[1], workers=0, name="over-budget", budget=0.01, keep_alive=True)
print(cluster.id, flush=True)
time.sleep(3600)
"""


def test_the_reaper_stops_a_gateway_cluster_over_budget_whose_kernel_is_gone(
        gateway: GatewayServer, auth: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASK_CUMULO__GATEWAY__RATE_PER_HOUR", "3600")
    monkeypatch.setenv("DASK_CUMULO__GUARDS__BUDGET_WARN_AT", "[]")
    with kernel_then_killed(OVER_BUDGET_KERNEL, gateway.address) as cid:
        assert gateway.clusters() == [_gateway_name_of(cid)]
    # a dead kernel's cluster keeps the lease grace from its last heartbeat (a restarted kernel may re-attach):
    # make that heartbeat an hour old
    Registry().update(cid, heartbeat=time.time() - 3600)
    with dask.config.set({"cumulo.gateway.rate-per-hour": 3600.0}):
        done = reaper.reap(Registry())
    assert [(r.name, r.action) for r in done] == [("over-budget", "stopped")] and "budget" in done[0].reason
    assert Registry().get(cid).state == "closed"
    assert gateway.clusters() == []  # the gateway really shut it down


def test_the_reaper_stops_a_disconnected_gateway_cluster_over_budget_while_its_kernel_lives(
        gateway: GatewayServer, auth: None) -> None:
    with dask.config.set({"cumulo.gateway.rate-per-hour": 3600.0, "cumulo.guards.budget-warn-at": []}):
        cluster = cumulo.connect(gateway.address, workers=0, name="left-running", budget=1e6)
        name = _gateway_name(cluster)
        cluster.disconnect()  # this kernel lives on, the cluster is left to its budget
        assert reaper.reap(Registry()) == []  # within its budget: left alone
        Registry().update(cluster.id, budget=0.01)
        done = reaper.reap(Registry())
    assert [(r.name, r.action) for r in done] == [("left-running", "stopped")] and "budget" in done[0].reason
    assert Registry().get(cluster.id).state == "closed"
    assert name and gateway.clusters() == []  # the gateway really shut it down


def _gateway_name_of(cluster_id: str) -> str:
    (resource,) = [r for r in Registry().resources(cluster_id=cluster_id) if r.kind == KIND]
    return resource.resource_id
