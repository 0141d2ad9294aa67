"""Local clusters: mutual TLS with per-cluster credentials, and workers without provider secrets.

Every cluster here is real: a scheduler in this process and worker processes on
127.0.0.1 (conftest checks that none is left behind). Certificates go beside
the per-test registry (conftest's CUMULO_REGISTRY), never to the user's folders.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import Client
from distributed.security import Security

import cumulo
from cumulo.security import local_security
from cumulo.exceptions import CredentialsError, SpecError
from cumulo.life.checkpoint import Checkpoint
from cumulo.providers.local import LocalDeployment, LocalProvider
from cumulo.life.registry import ClusterRecord, Registry
from cumulo.spec import ClusterSpec
from cumulo.security.tlscerts import create_cluster_tls

SECRET = "lambda-test-key-never-on-a-worker-0123456789"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def certs_root(registry_path: Path) -> Path:
    """Where this test's local clusters keep their credentials (beside its registry)."""
    root = local_security.certs_root()
    assert root == registry_path.parent / "tls"
    return root


def _record(dep: LocalDeployment, cluster_id: str) -> ClusterRecord:
    now = time.time()
    return ClusterRecord(id=cluster_id, name=cluster_id, provider="local", spec={}, state="running",
                         created=now, updated=now, address=dep.address)


async def _launch(cluster_id: str, **spec: Any) -> LocalDeployment:
    checkpoint = Checkpoint(Registry(), cluster_id, "local")
    dep = await LocalProvider().launch(ClusterSpec(workers=1, threads_per_worker=1, **spec), cluster_id=cluster_id,
                                       checkpoint=checkpoint)
    assert isinstance(dep, LocalDeployment)
    return dep


async def _refused(address: str, security: Security | None) -> None:
    """A client with ``security`` cannot open a connection to ``address`` (it never gets to send work).

    An asynchronous client on the test's own loop: a blocking Client started from a
    helper thread while that loop runs can deadlock in distributed's LoopRunner start.
    """
    with pytest.raises((OSError, TimeoutError, asyncio.TimeoutError, TypeError, ValueError)):
        client = await asyncio.wait_for(
            Client(address, security=security, timeout="2s", asynchronous=True, set_as_default=False), 30)
        await client.close()


# -- TLS ---------------------------------------------------------------------------------------


def test_default_local_cluster_is_tls_with_a_private_folder_removed_on_close(certs_root: Path) -> None:
    cluster = cumulo.connect(workers=1, threads_per_worker=1, name="private")
    try:
        address = cluster.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:"), address
        assert all(w.startswith("tls://") for w in cluster.client.scheduler_info()["workers"])
        assert cluster.client.submit(lambda: 6 * 7).result() == 42
        folder = certs_root / cluster.id
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        files = sorted(p.name for p in folder.iterdir())
        assert {"ca.pem", "client.pem", "client-key.pem", "owner.json", "dask-client.yaml"} <= set(files)
        assert all(stat.S_IMODE((folder / f).stat().st_mode) == 0o600 for f in files)
        assert folder.stat().st_uid == os.getuid()
        # the row says where the cluster is, never how to get in
        assert "BEGIN" not in str(Registry().get(cluster.id))
    finally:
        cluster.close()
    assert not folder.exists()


def test_clients_without_the_cluster_credentials_are_refused(certs_root: Path, tmp_path: Path) -> None:
    async def main() -> None:
        dep = await _launch("refuse01")
        try:
            nanny = next(iter(dep.manager.workers.values()))
            for address in (dep.address, nanny.worker_address, nanny.address):
                assert address.startswith("tls://"), address
                # plain tcp to the TLS port, and a tls:// client without any certificate
                await _refused(address.replace("tls://", "tcp://"), None)
                await _refused(address, None)
            # certificates of another CA (another cluster's, a self-signed set)
            other = create_cluster_tls("other", directory=tmp_path / "elsewhere")
            await _refused(dep.address, other.security("client"))
            await _refused(dep.address, Security.temporary())
            # trusting the cluster's CA is not enough: the scheduler checks the client's certificate too
            ca_only = Security(require_encryption=True, tls_ca_file=str(certs_root / "refuse01" / "ca.pem"),
                               tls_client_cert=other.cert_file("client").as_posix(),
                               tls_client_key=other.key_file("client").as_posix())
            await _refused(dep.address, ca_only)
            # while the owner's and the folder's credentials work
            async with Client(dep.address, security=dep.security, asynchronous=True) as client:
                assert await client.submit(sum, [1, 2]) == 3
        finally:
            await dep.close()

    asyncio.run(main())


ATTACH = textwrap.dedent(
    """
    import sys
    from distributed import Client
    address, name = sys.argv[1], sys.argv[2]
    # any Dask tool of this user: DASK_CONFIG points at the cluster's folder (dask-client.yaml)
    with Client(address, timeout="10s", set_as_default=False) as plain:
        print("plain", plain.submit(lambda: 40 + 2).result(), flush=True)
    import cumulo
    cluster = cumulo.connect(name=name)
    assert not cluster.owner
    print("by-name", cluster.client.scheduler.address, cluster.client.submit(lambda: 6 * 7).result(), flush=True)
    cluster.disconnect()
    """
)


def test_reattach_by_name_from_another_process(certs_root: Path) -> None:
    with cumulo.connect(workers=1, threads_per_worker=1, name="shared") as cluster:
        address = cluster.client.scheduler.address
        assert address.startswith("tls://")
        env = {**os.environ, "DASK_CONFIG": str(certs_root / cluster.id)}
        done = subprocess.run([sys.executable, "-c", ATTACH, address, "shared"], capture_output=True, text=True,
                              env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "plain 42" in done.stdout
        assert f"by-name {address} 42" in done.stdout
        # the other process only detached: the cluster still serves its owner
        assert cluster.client.submit(lambda: 1).result() == 1
    assert not (certs_root / cluster.id).exists()


def test_stop_from_its_row_shuts_the_cluster_down_and_removes_its_credentials(certs_root: Path) -> None:
    async def main() -> None:
        dep = await _launch("stop0001")
        try:
            record = _record(dep, "stop0001")
            assert (certs_root / "stop0001").is_dir()
            provider = LocalProvider()  # a fresh one, as `cumulo down` in another process would make
            assert provider.security(record) is not None
            await provider.stop(record, Checkpoint(Registry(), "stop0001", "local"))
            assert not (certs_root / "stop0001").exists()
            for _ in range(100):
                if dep.manager.scheduler.status.name in ("closed", "closing"):
                    break
                await asyncio.sleep(0.1)
            assert dep.manager.scheduler.status.name in ("closed", "closing")
            with pytest.raises(CredentialsError):
                provider.security(record)
            # the scheduler is gone, so a second stop without credentials is not an error
            await provider.stop(record, Checkpoint(Registry(), "stop0001", "local"))
        finally:
            await dep.close()

    asyncio.run(main())


def test_stop_without_credentials_of_a_live_cluster_is_an_error(certs_root: Path) -> None:
    async def main() -> None:
        dep = await _launch("lost0001")
        try:
            local_security.remove_local_tls("lost0001")
            with pytest.raises(CredentialsError, match="lost0001"):
                await LocalProvider().stop(_record(dep, "lost0001"), Checkpoint(Registry(), "lost0001", "local"))
            # the owner holds its credentials in memory and keeps working
            async with Client(dep.address, security=dep.security, asynchronous=True) as client:
                assert await client.submit(sum, [2, 3]) == 5
        finally:
            await dep.close()

    asyncio.run(main())


def test_opt_out_gives_plain_tcp_and_no_credentials(certs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", SECRET)
    with dask.config.set({"cumulo.local.tls": False}):
        with cumulo.connect(workers=1, threads_per_worker=1, name="plain") as cluster:
            address = cluster.client.scheduler.address
            assert address.startswith("tcp://127.0.0.1:"), address
            assert not (certs_root / cluster.id).exists()
            assert LocalProvider().security(Registry().get(cluster.id)) is None
            # the secrets are kept from workers whatever the transport
            seen = cluster.client.run(_probe, "LAMBDA_API_KEY", SECRET)
            assert all(v["environ"] is None and not v["proc"] for v in seen.values())


# -- worker environments -----------------------------------------------------------------------


def _probe(name: str, value: str) -> dict[str, Any]:
    """What a task can find of ``name``/``value`` in its worker process."""
    import os
    import subprocess

    with open("/proc/self/environ", "rb") as f:
        proc = f.read()
    child = subprocess.run(["env"], capture_output=True, text=True).stdout
    return {"environ": os.environ.get(name), "proc": value.encode() in proc, "child": value in child,
            "visible": os.environ.get("CUMULO_TEST_VISIBLE")}


def test_worker_tasks_never_see_provider_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", SECRET)  # as if set in the notebook's environment
    monkeypatch.setenv("TEAM_STORE_TOKEN", "team-token-value-987")
    monkeypatch.setenv("CUMULO_TEST_VISIBLE", "ordinary")

    async def main() -> None:
        with dask.config.set({"cumulo.local.scrub-env": ["TEAM_*_TOKEN"]}):
            dep = await _launch("scrub001", env={"CUMULO_TEST_VISIBLE": "ordinary"})
        try:
            async with Client(dep.address, security=dep.security, asynchronous=True) as client:
                seen = await client.submit(_probe, "LAMBDA_API_KEY", SECRET, pure=False)
                assert seen == {"environ": None, "proc": False, "child": False, "visible": "ordinary"}
                team = await client.run(_probe, "TEAM_STORE_TOKEN", "team-token-value-987")
                assert all(v["environ"] is None and not v["proc"] for v in team.values())
                await client.restart()  # a worker the nanny spawns again is scrubbed again
                again = await client.submit(_probe, "LAMBDA_API_KEY", SECRET, pure=False)
                assert again["environ"] is None and not again["proc"] and not again["child"]
        finally:
            await dep.close()
        assert os.environ["LAMBDA_API_KEY"] == SECRET  # the notebook keeps its own key

    asyncio.run(main())


def test_the_probe_does_find_an_inherited_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the test above: a plain LocalCluster worker inherits the notebook's key."""
    from distributed import LocalCluster

    monkeypatch.setenv("LAMBDA_API_KEY", SECRET)
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as plain, \
            Client(plain, set_as_default=False) as client:
        seen = client.submit(_probe, "LAMBDA_API_KEY", SECRET, pure=False).result()
    assert seen["environ"] == SECRET and seen["proc"] and seen["child"]


def test_env_argument_cannot_hand_a_secret_to_workers() -> None:
    provider = LocalProvider()
    with pytest.raises(SpecError, match="LAMBDA_API_KEY"):
        provider.cluster_kwargs(ClusterSpec(env={"LAMBDA_API_KEY": "x"}), gpus=0)
    with dask.config.set({"cumulo.local.scrub-env": ["HF_*"]}), pytest.raises(SpecError, match="HF_TOKEN"):
        provider.cluster_kwargs(ClusterSpec(env={"HF_TOKEN": "x"}), gpus=0)
    kwargs = provider.cluster_kwargs(ClusterSpec(env={"OMP_NUM_THREADS": "1"}), gpus=0)
    assert kwargs["preload"][0].endswith("_local_worker.py") and "LAMBDA_API_KEY" in kwargs["preload_argv"][0]


def test_user_worker_preloads_are_kept_after_the_scrub() -> None:
    with dask.config.set({"distributed.worker.preload": ["mypreload"], "distributed.worker.preload-argv": ["--x"]}):
        opts = local_security.worker_scrub_options()
    assert opts["preload"][1:] == ["mypreload"] and opts["preload_argv"][1:] == [["--x"]]


# -- the credentials folder --------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folders_of_owners_that_died_are_pruned_and_others_kept(certs_root: Path) -> None:
    import json

    local_security.create_local_tls("mine0001")  # owned by this live process
    dead = create_cluster_tls("dead0001", directory=certs_root)
    (dead.directory / local_security.OWNER_FILE).write_text(
        json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": 1.0}))
    elsewhere = create_cluster_tls("host0001", directory=certs_root)
    (elsewhere.directory / local_security.OWNER_FILE).write_text(
        json.dumps({"host": "another-host", "pid": 1, "started": 1.0}))
    lambda_like = create_cluster_tls("cloud001", directory=certs_root)  # no owner file: another provider's

    assert local_security.prune_stale() == ["dead0001"]
    assert {p.name for p in certs_root.iterdir()} == {"mine0001", "host0001", "cloud001"}
    local_security.remove_local_tls("mine0001")
    assert not (certs_root / "mine0001").exists() and lambda_like.ca_file.exists()


def test_credentials_are_never_kept_where_other_users_could_swap_them(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with dask.config.set({"cumulo.local.certs-dir": str(shared)}), pytest.raises(CredentialsError, match="other users"):
        local_security.create_local_tls("abc00001")
    assert not (shared / "abc00001").exists()
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "target").mkdir()
    (root / "abc00002").symlink_to(tmp_path / "target")
    with dask.config.set({"cumulo.local.certs-dir": str(root)}):
        with pytest.raises(CredentialsError, match="not a directory"):
            local_security.create_local_tls("abc00002")
        local_security.remove_local_tls("abc00002")  # removes nothing a link points to
        with pytest.raises(SpecError):
            local_security.remove_local_tls("../abc00002")
    assert (tmp_path / "target").is_dir() and (root / "abc00002").is_symlink()


def test_the_client_config_file_is_plain_dask_config(certs_root: Path) -> None:
    import yaml

    local_security.create_local_tls("conf0001")
    try:
        flat = local_security.client_config("conf0001")
        assert flat["distributed.comm.tls.client.key"] == str(certs_root / "conf0001" / "client-key.pem")
        loaded = yaml.safe_load((certs_root / "conf0001" / local_security.CLIENT_CONFIG_FILE).read_text())
        with dask.config.set(loaded):
            assert {k: dask.config.get(k) for k in flat} == flat
    finally:
        local_security.remove_local_tls("conf0001")


def _first_visible_device() -> str | None:
    """The GPU a worker uses: the first of CUDA_VISIBLE_DEVICES (dask-cuda puts each worker's own GPU there)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if visible is None else visible.split(",")[0].strip()


@pytest.mark.gpu
def test_gpu_local_cluster_is_tls_and_scrubbed_too(certs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LocalCUDACluster takes the same arguments: TLS for its scheduler and CUDA workers, and the preload that
    removes secrets."""
    from dask_cuda import LocalCUDACluster
    from distributed.diagnostics import nvml

    monkeypatch.setenv("LAMBDA_API_KEY", SECRET)

    async def main() -> None:
        dep = await _launch("gputls01")
        try:
            assert isinstance(dep.manager, LocalCUDACluster), type(dep.manager)  # NVML sees a GPU
            assert dep.address.startswith("tls://") and (certs_root / "gputls01").is_dir()
            await _refused(dep.address, None)
            async with Client(dep.address, security=dep.security, asynchronous=True) as client:
                seen = await client.run(_probe, "LAMBDA_API_KEY", SECRET)
                assert len(seen) == 1 and all(a.startswith("tls://") for a in seen), seen  # the worker too
                assert all(v["environ"] is None and not v["proc"] and not v["child"] for v in seen.values())
                devices = await client.run(_first_visible_device)
                assert set(devices.values()) <= {str(i) for i in range(nvml.device_get_count())}, devices
        finally:
            await dep.close()
        assert not (certs_root / "gputls01").exists()

    asyncio.run(main())


_INTERRUPTED_KERNEL = """
import signal, sys
import cumulo

def main():
    signal.signal(signal.SIGINT, lambda *a: print("interrupted", flush=True))  # as ipykernel does
    cluster = cumulo.connect(workers=2, threads_per_worker=1)
    data = cluster.client.scatter(list(range(100)))
    print(sorted(w["id"] for w in cluster.client.scheduler_info()["workers"].values()), flush=True)
    sys.stdin.readline()  # the test interrupts the whole process group here
    print(sorted(w["id"] for w in cluster.client.scheduler_info()["workers"].values()), flush=True)
    print(sum(cluster.client.gather(data)), flush=True)
    cluster.close()

if __name__ == "__main__":
    main()
"""


def test_a_kernel_interrupt_does_not_kill_the_local_workers(tmp_path: Path) -> None:
    """Jupyter interrupts a kernel with SIGINT to its whole process group; the workers used to die of it."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "kernel.py"
    script.write_text(_INTERRUPTED_KERNEL)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True, env=os.environ.copy())
    try:
        assert proc.stdout is not None and proc.stdin is not None
        before = proc.stdout.readline().strip()
        assert before.startswith("["), before
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "interrupted"
        import time

        time.sleep(2)  # long enough for a killed worker to be noticed by its scheduler
        proc.stdin.write("\n")
        proc.stdin.flush()
        after = proc.stdout.readline().strip()
        assert after == before, "the workers were replaced: the interrupt killed them"
        assert proc.stdout.readline().strip() == str(sum(range(100))), "their data survived"
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
