"""The notebook's environment on emulated Lambda instances that start bare.

Each instance runs its first-boot script with only the system's python3 on
PATH (no test packages): dask, pandas, torch and cumulo are on the workers only
because cumulo's environment sync installed them (uv, the real package index
through the run's uv cache, and a local wheel sent over TLS).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import pandas as pd
import pytest

import cumulo
from cumulo import datasets, envsync, pipeline, train
from cumulo.exceptions import EnvironmentSyncError, SpecError, VersionMismatch
from cumulo.providers.cloud import bootstrap
from cumulo.life.registry import Registry
from cumulo.security.tlscerts import create_cluster_tls

from .conftest import DaskProcesses, free_port, wait_for_workers
from .lambda_emulator import Emulator
from .lambda_support import fast_config, no_orphans  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.timeout(600)
FIND_LINKS = ["/opt/wheels"] if Path("/opt/wheels").is_dir() else []  # torch+cpu lives there on this machine


def _env_settings() -> dict[str, object]:
    settings: dict[str, object] = {"cumulo.env.find-links": FIND_LINKS}
    if not FIND_LINKS:
        settings["cumulo.env.exclude"] = ["torch"]
    return settings


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """Bare instances, packages installed by cumulo (the lambda_support fixture runs a prepared image)."""
    emu = Emulator(image="bare").start()
    monkeypatch.setenv("LAMBDA_API_KEY", emu.api_key)
    settings = fast_config(emu, tmp_path) | _env_settings() | {
        "cumulo.cloud.install-packages": True, "cumulo.cloud.python": "/usr/bin/python3",
        "cumulo.cloud.scheduler-timeout": 240, "cumulo.cloud.workers-timeout": 240,
        "cumulo.cloud.print-progress": True}
    try:
        with dask.config.set(settings):
            yield emu
    finally:
        emu.close()


def test_bare_instances_get_the_notebooks_environment(emulator: Emulator, tmp_path: Path) -> None:
    started = time.monotonic()
    with cumulo.connect("lambda", name="synced", gpu="A10", workers=2) as cluster:
        seconds = time.monotonic() - started
        executables = set(cluster.client.run(lambda: __import__("sys").executable).values())
        assert len(executables) == 2 and all(e.endswith("/venv/bin/python") for e in executables)
        assert all(str(Path(sys.executable).parent) not in e for e in executables)
        # cumulo itself arrived as a local wheel over the cluster's TLS link
        assert set(cluster.client.run(lambda: __import__("cumulo").__version__).values()) == {cumulo.__version__}
        versions = cluster.client.run(lambda: {m: __import__(m).__version__ for m in ("dask", "pandas", "pyarrow")})
        assert all(v == {m: __import__(m).__version__ for m in ("dask", "pandas", "pyarrow")}
                   for v in versions.values())
        out = datasets.taxi(tmp_path / "trips", rows=20_000, partitions=4, seed=5, client=cluster.client)
        remote = pipeline.run(out)
        # %%cumulo cells and DDP training pickle cumulo functions by reference: they need cumulo (and torch)
        # on the workers, which only the environment sync put there
        import io

        from cumulo.remote_cell import run_cell

        printed = io.StringIO()
        values = run_cell("import sys\nprint('on', sys.prefix)\nanswer = 6 * 7", cluster, outputs=["answer"],
                          stdout=printed)
        assert values["answer"] == 42 and "/venv" in printed.getvalue()
        if FIND_LINKS:  # torch is in the lock
            def world() -> int:
                import torch.distributed as dist

                return dist.get_world_size()

            assert train.torch(world, cluster.client) == [2, 2]
        log = (emulator.instances[next(iter(emulator.instances))].workdir / "bootstrap.log").read_text()
        assert "environment installed in" in log and "CPU lock" in log
        events = " ".join(m for _, _, m in Registry().events(cluster.id))
        assert '"packages"' in events and "cumulo" in events
        # the card and `cumulo usage` say which environment the workers run
        assert "Environment" in cluster._repr_html_() and "local cumulo" in cluster._repr_html_()
        usage = subprocess.run([str(Path(sys.executable).parent / "cumulo"), "usage", "synced"],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "DASK_CUMULO__LAMBDA__CERTS_DIR":
                                    str(dask.config.get("cumulo.lambda.certs-dir"))})
        assert "environment: " in usage.stdout and "packages" in usage.stdout, usage.stdout + usage.stderr
    with cumulo.connect(workers=2) as local:
        here = pipeline.run(out)
        assert local.provider == "local"
    pd.testing.assert_frame_equal(remote.by_borough_hour, here.by_borough_hour)
    assert (remote.rows_in, remote.rows_kept) == (here.rows_in, here.rows_kept)
    print(f"lambda emulator, bare instances, 2 workers: connect to ready in {seconds:.1f}s")


def test_a_package_the_index_lacks_fails_before_anything_bills(emulator: Emulator) -> None:
    with pytest.raises(EnvironmentSyncError) as info:
        cumulo.connect("lambda", name="nopkg", gpu="A10", workers=1, environment=["cumulo-no-such-package-zz==1.0"])
    text = str(info.value)
    # the index answered and has no such package: cumulo says so (a URL that merely names it is not enough)
    assert "package 'cumulo-no-such-package-zz' is not on the package index" in text, text
    assert "nothing was launched" in text and "could not be reached" not in text, text
    assert not emulator.instances, "no instance may be launched for an environment that cannot install"
    assert Registry().latest("nopkg") is None  # refused in preflight: no row at all


def test_an_unreachable_index_is_named_and_no_package_is_blamed(emulator: Emulator,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there: the index is down, whatever the packages
    monkeypatch.setenv("UV_INDEX_URL", f"http://cumulo:s3cret-token@127.0.0.1:{port}/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(EnvironmentSyncError) as info:
        cumulo.connect("lambda", name="noindex", gpu="A10", workers=1, environment=["cumulo-no-such-package-zz==1.0"])
    text = str(info.value)
    assert f"the package index http://127.0.0.1:{port} could not be reached" in text, text
    assert "is not on the package index" not in text and "package 'cumulo-no-such-package-zz'" not in text, text
    assert "UV_INDEX_URL" in text and "nothing was launched" in text, text
    assert "s3cret-token" not in text  # the index's credentials never reach an error
    assert not emulator.instances
    assert Registry().latest("noindex") is None


def test_first_boot_script_stays_under_the_user_data_limit(tmp_path: Path) -> None:
    tls = create_cluster_tls("c1", directory=tmp_path)
    lock = envsync.capture()
    opts = bootstrap.BootstrapOptions(requirements=envsync.compact(lock),
                                      gpu_requirements=envsync.compact(envsync.for_gpu(lock)))
    for role in ("head", "worker"):
        script = bootstrap.user_data(role, cluster_id="c1", tls=tls, options=opts, scheduler_host="10.0.0.1")
        assert len(script.encode()) < bootstrap.MAX_USER_DATA
        assert "cumulo" not in envsync.compact(lock)  # local code is not in the script (pins only)
    huge = envsync.Lock(python="3.11", pins=[f"package-{i:05d}-{'x' * 40}==1.{i}" for i in range(4000)])
    with pytest.raises(SpecError, match="user-data limit"):
        bootstrap.user_data("head", cluster_id="c1", tls=tls,
                            options=bootstrap.BootstrapOptions(requirements=envsync.compact(huge)))


def test_gpu_workers_get_rapids_and_cuda_builds() -> None:
    lock = envsync.Lock(python="3.11", pins=["dask==2026.7.1", "torch==2.13.0+cpu", "xgboost-cpu==3.2.0"])
    gpu = envsync.for_gpu(lock)
    assert "torch==2.13.0" in gpu.pins and "xgboost==3.2.0" in gpu.pins
    assert {p.split(">=")[0] for p in gpu.pins if ">=" in p} == {"cudf-cu12", "dask-cudf-cu12", "dask-cuda"}
    assert "dask==2026.7.1" in gpu.pins


def _cudf_sum() -> dict[str, int]:
    """Runs on a worker: a cuDF series made and summed on that worker's GPU, and the process it ran in."""
    import cudf  # type: ignore[import-not-found]

    return {"sum": int(cudf.Series([1, 2, 3]).sum()), "pid": os.getpid()}


@pytest.mark.gpu
@pytest.mark.cudf
def test_the_gpu_lock_resolves_and_cudf_computes_on_the_gpu_workers() -> None:
    """On a GPU machine: the GPU lock resolves, and cuDF computes on every CUDA worker (see docs/gpu-check.md)."""
    lock = envsync.for_gpu(envsync.capture())
    envsync.check_resolvable(lock)
    with cumulo.connect() as cluster:
        assert cluster.backend == "cudf"  # every worker has a GPU and cuDF
        done = cluster.client.run(_cudf_sum)
    assert done and all(r["sum"] == 6 for r in done.values()), done
    assert os.getpid() not in {r["pid"] for r in done.values()}  # computed in the workers, not here


@pytest.fixture
def local_package(tmp_path: Path) -> Iterator[str]:
    """A tiny package installed editable into this environment, removed afterwards."""
    src = tmp_path / "tinypkg"
    (src / "cumulo_tinypkg").mkdir(parents=True)
    (src / "cumulo_tinypkg" / "__init__.py").write_text("def answer():\n    return 42\n")
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        [project]
        name = "cumulo-tinypkg"
        version = "0.0.1"
    """))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(src)], check=True)
    try:
        yield "cumulo_tinypkg"
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "cumulo-tinypkg"], check=True)


def test_local_editable_package_reaches_the_workers(emulator: Emulator, local_package: str) -> None:
    lock = envsync.capture()
    assert "cumulo-tinypkg" in {d.name for d in lock.local}
    with cumulo.connect("lambda", name="tiny", gpu="A10", workers=1) as cluster:
        got = cluster.client.run(lambda: __import__("cumulo_tinypkg").answer())
        assert list(got.values()) == [42]


def test_a_version_mismatch_on_an_attached_cluster_is_caught_before_work(tmp_path: Path) -> None:
    """A scheduler and worker from an environment with another pandas: connect() raises with the table."""
    import pandas

    uv = envsync.uv_binary()
    if uv is None:
        pytest.skip("needs uv (the ssh extra)")
    venv = tmp_path / "other"
    subprocess.run([str(uv), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    other = "3.0.5" if pandas.__version__ != "3.0.5" else "3.0.4"
    pins = [p for p in envsync.capture(roots=("distributed", "pandas")).pins if not p.startswith("pandas==")]
    subprocess.run([str(uv), "pip", "install", "-q", "-p", str(venv / "bin" / "python"), *pins,
                    f"pandas=={other}"], check=True)
    procs = DaskProcesses(tmp_path, workers=1, bin_dir=venv / "bin")  # that environment's `dask` command
    try:
        wait_for_workers(procs.address, 1)
        with pytest.raises(VersionMismatch) as info:
            cumulo.connect(procs.address, name="mixed")
        assert "pandas" in str(info.value) and other in str(info.value)
        assert Registry().find_open("mixed") is None
    finally:
        procs.stop()
