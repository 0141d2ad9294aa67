"""Shared fixtures: an isolated registry per test, real Dask processes on 127.0.0.1, leak checks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from .require_all import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (hooks)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def registry_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own registry file, so tests never touch the user's clusters."""
    path = tmp_path / "registry.db"
    monkeypatch.setenv("CUMULO_REGISTRY", str(path))
    return path


def _is_helper(p: psutil.Process) -> bool:
    """multiprocessing's resource tracker and forkserver live as long as the interpreter: not a leak."""
    cmd = " ".join(p.cmdline())
    return "multiprocessing.resource_tracker" in cmd or "multiprocessing.forkserver" in cmd


def live_children() -> list[psutil.Process]:
    """Descendants of this interpreter that are still running (zombies waiting to be reaped excluded)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and not _is_helper(p):
                out.append(p)
        except psutil.Error:
            continue
    return out


#: Where outside services would be reached if a test forgot to point them at an emulator: a closed
#: loopback port, so such a test fails fast and no traffic leaves this machine.
NOWHERE = "http://127.0.0.1:9/nowhere"
#: AWS's price list files are named per region: the same closed port, with the {region} the setting needs.
NOWHERE_AWS_PRICES = NOWHERE + "/{region}/index.csv"


@pytest.fixture(autouse=True)
def no_outside_services(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test talks to a real provider: no key from the environment, every service URL on loopback."""
    import dask

    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    # AWS: no credentials or profile of the machine, no instance metadata service (169.254.169.254), and every
    # endpoint on loopback (tests/aws_emulator.py sets its own)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_SSM"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", NOWHERE)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    # Azure: no credentials of the machine (DefaultAzureCredential would ask az, the environment or the instance
    # metadata service), and ARM on the closed port (tests/azure_support.py points it at its emulator)
    for key in ("AZURE_ACCESS_TOKEN", "AZURE_SUBSCRIPTION_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
                "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DASK_CUMULO__AZURE__CREDENTIAL", "static-token")
    for key in ("LAMBDA__BASE_URL", "CATALOG__LAMBDA_URL", "CATALOG__AZURE_URL", "AZURE__ARM_ENDPOINT"):  # for subprocesses and kernels
        monkeypatch.setenv(f"DASK_CUMULO__{key}", NOWHERE)
    monkeypatch.setenv("DASK_CUMULO__AWS__PRICE_LIST_URL", NOWHERE_AWS_PRICES)
    with dask.config.set({"cumulo.lambda.base-url": NOWHERE, "cumulo.catalog.lambda-url": NOWHERE,
                          "cumulo.catalog.azure-url": NOWHERE, "cumulo.aws.price-list-url": NOWHERE_AWS_PRICES,
                          "cumulo.azure.arm-endpoint": NOWHERE, "cumulo.azure.credential": "static-token"}):
        yield


#: Threads that may outlive a test: pools and loops owned by the interpreter or by libraries, not by a cluster
#: (fsspecIO: fsspec's one event loop per process, started by the first s3fs call, as dd.read_parquet("s3://")).
_LONG_LIVED_THREADS = ("asyncio_", "ThreadPoolExecutor", "Dask-Offload", "Profile", "IO loop", "AsyncProcess",
                       "TCP-Executor", "QueueFeederThread", "pydevd", "Thread-", "fsspecIO")


def _own_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive() and t is not threading.main_thread()}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a cumulo thread (a cluster's loop, a guard, a meter) running, as distributed's
    check_thread_leak does."""
    before = _own_threads()
    yield
    deadline = time.monotonic() + 10
    while True:
        left = [t for t in _own_threads() - before
                if t.name.startswith("cumulo") or not t.name.startswith(_LONG_LIVED_THREADS)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"test left threads running: {[t.name for t in left]}"


@pytest.fixture(autouse=True)
def no_live_clusters() -> Iterator[None]:
    """Fail a test that leaves a cumulo Cluster open (a client attached, a watchdog running), as distributed's
    check_instances does for clients and servers."""
    from cumulo import attached

    yield
    deadline = time.monotonic() + 10
    while True:
        live = [c for c in list(attached.live) if c.status == "running"]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    names = [c.name for c in live]
    for c in live:
        try:
            c.close()
        except Exception:
            pass
    assert not names, f"test left clusters open: {names}"


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves child processes of this interpreter running."""
    before = {p.pid for p in live_children()}
    yield
    deadline = time.monotonic() + 10
    while True:
        left = [p for p in live_children() if p.pid not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    described = []
    for p in left:
        try:
            described.append((p.pid, " ".join(p.cmdline()[:4])))
            p.kill()
        except psutil.Error:
            continue
    assert not described, f"test left processes running: {described}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def kernel_then_killed(script: str, *args: str) -> Iterator[str]:
    """A kernel (``python -c script args``) that prints a cluster id and then waits: yields the id, and kills
    the kernel on leaving, as a laptop or a crash would, without it closing anything."""
    kernel = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
    try:
        cid = kernel.stdout.readline().strip()  # type: ignore[union-attr]
        assert cid, "the kernel never connected"
        yield cid
    finally:
        kernel.kill()
        kernel.wait(10)
        kernel.stdout.close()  # type: ignore[union-attr]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class DaskProcesses:
    """A `dask scheduler` and `dask worker` started as separate processes, as a user would.

    ``bin_dir``: the environment whose `dask` command runs them (default: the test's own)."""

    def __init__(self, tmp: Path, *, workers: int = 1, tls: dict[str, str] | None = None,
                 bin_dir: Path = BIN) -> None:
        self.port = free_port()
        scheme = "tls" if tls else "tcp"
        self.address = f"{scheme}://127.0.0.1:{self.port}"
        tls_args: list[str] = []
        if tls:
            tls_args = ["--tls-ca-file", tls["ca_file"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        log = open(tmp / "dask-processes.log", "ab")
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        self.scheduler = subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--dashboard-address", "127.0.0.1:0", "--protocol", scheme, *tls_args],
            stdout=log, stderr=log, env=env,
        )
        self.workers = [
            subprocess.Popen(
                [str(bin_dir / "dask"), "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", *tls_args],
                stdout=log, stderr=log, env=env,
            )
            for _ in range(workers)
        ]
        self.log = tmp / "dask-processes.log"

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def wait_for_workers(address: str, n: int, security=None, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Block until the scheduler at ``address`` has ``n`` workers."""
    from distributed import Client

    with Client(address, security=security, timeout=timeout, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=timeout)


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[DaskProcesses]:
    """A plain-tcp scheduler with one worker on 127.0.0.1, started by the CLI."""
    procs = DaskProcesses(tmp_path, workers=1)
    try:
        wait_for_workers(procs.address, 1)
        yield procs
    finally:
        procs.stop()


def gpu_count() -> int:
    """GPUs NVML reports on this machine (0 without NVML or a driver); `gpu` tests skip at 0."""
    try:
        from distributed.diagnostics import nvml

        return int(nvml.device_get_count())
    except Exception:
        return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests, with the reason, where NVML reports no GPU (decided once, at collection)."""
    if gpu_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU: NVML reports none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
