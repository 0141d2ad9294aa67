"""ssh:// clusters against a real OpenSSH server on loopback, logging in as a throw-away user.

The user's Python (/usr/bin/python3) has none of the test's packages: the
workers import dask, pandas and cumulo only because cumulo's environment sync
installed them there. Nothing is left running for the user after each test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import pandas as pd
import pytest

import cumulo
from cumulo import datasets, pipeline
from cumulo.exceptions import ConnectError, CredentialsError, EnvironmentSyncError, HostKeyRefused, ProviderError
from cumulo.providers.ssh.session import open_session
from cumulo.providers.ssh.target import Host
from cumulo.life import reaper
from cumulo.life.registry import Registry

from . import sshd
from .conftest import BIN, free_port, kernel_then_killed, wait_for

pytestmark = [pytest.mark.skipif(sshd.why_unavailable() is not None, reason=str(sshd.why_unavailable())),
              pytest.mark.timeout(600)]

TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd.SSHServer]:
    srv = sshd.start(tmp_path_factory.mktemp("sshd"), free_port())
    try:
        yield srv
    finally:
        sshd.stop(srv)
        out = Path(__file__).resolve().parent.parent / "test-artifacts"
        out.mkdir(exist_ok=True)
        (out / "ssh-times.json").write_text(json.dumps(TIMES, indent=1))  # quoted in the issue note


def _settings(server: sshd.SSHServer) -> dict[str, object]:
    settings: dict[str, object] = {"cumulo.ssh.key-file": str(server.client_key),
                                   "cumulo.ssh.known-hosts": str(server.known_hosts),
                                   "cumulo.ssh.scheduler-port": 0}
    if Path("/opt/wheels").is_dir():  # this machine's local-version wheels (torch+cpu), readable by the user
        settings["cumulo.env.find-links"] = ["/opt/wheels"]
    else:
        settings["cumulo.env.exclude"] = ["torch"]
    return settings


def _env_vars(settings: dict[str, object]) -> dict[str, str]:
    """The same settings for a subprocess (dask reads DASK_CUMULO__... at import)."""
    out = {}
    for key, value in settings.items():
        name = "DASK_" + key.upper().replace(".", "__").replace("-", "_")
        out[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return out


@pytest.fixture
def ssh(server: sshd.SSHServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[sshd.SSHServer]:
    settings = _settings(server)
    for name, value in _env_vars(settings).items():
        monkeypatch.setenv(name, value)
    with dask.config.set(settings):
        yield server
    left = server.user_processes()
    server.kill_user_processes()
    assert not [p for p in left if "sshd" not in p], f"left running on the host: {left}"


def _cumulo(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cumulo"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_pipeline_reattach_from_another_process_and_down(ssh: sshd.SSHServer) -> None:
    started = time.monotonic()
    cluster = cumulo.connect(ssh.target, name="hosts", workers=2, threads_per_worker=1)
    TIMES["first connect"] = time.monotonic() - started
    try:
        assert cluster.address.startswith("tls://127.0.0.1:")
        # the workers run the synced venv, not the user's bare python
        pythons = set(cluster.client.run(lambda: __import__("sys").executable).values())
        assert len(pythons) == 1 and "/.cache/cumulo/envs/" in pythons.pop()
        assert set(cluster.client.run(lambda: __import__("cumulo").__version__).values()) == {cumulo.__version__}
        path = ssh.home / "trips"  # written by the workers, as the host's user
        path.mkdir()
        shutil.chown(path, ssh.user, ssh.user)
        datasets.taxi(path, rows=30_000, partitions=4, seed=2, client=cluster.client)
        result = pipeline.run(path)
        trips = pd.concat(pd.read_parquet(p) for p in sorted(path.glob("*.parquet")))
        assert result.rows_in == len(trips) == 30_000
        assert result.rows_kept == int(((trips.trip_distance > 0) & (trips.fare_amount > 0)).sum())
        rec = Registry().find_open("hosts")
        assert rec is not None and rec.provider == "ssh" and rec.state == "running"
        events = " ".join(m for _, _, m in Registry().events(rec.id))
        assert "environment built" in events and '"packages"' in events
        # the link is TLS with this cluster's certificates: a client without them is refused
        from distributed import Client

        with pytest.raises((OSError, TimeoutError)):
            Client(cluster.address.replace("tls://", "tcp://"), timeout=3)

        code = ("import cumulo; c = cumulo.connect(name='hosts'); "
                "print(c.client.submit(lambda x: x * 7, 6).result()); print(c.provider)")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr
        assert other.stdout.split()[:2] == ["42", "ssh"]
        assert ssh.user_processes(), "re-attaching from another process and exiting must not stop it"
    except BaseException:
        cluster.close()
        raise
    down = _cumulo("down", "hosts")
    assert down.returncode == 0, down.stderr
    wait_for(lambda: not [p for p in ssh.user_processes() if "sshd" not in p], 30, what="processes gone on the host")
    assert Registry().latest("hosts").state == "closed"
    assert not (ssh.home / ".cache" / "cumulo" / "clusters" / Registry().latest("hosts").id).exists()
    cluster.close()  # stopped elsewhere: closing the handle is quiet


def test_second_connect_reuses_the_environment(ssh: sshd.SSHServer) -> None:
    for attempt in ("first", "second"):
        started = time.monotonic()
        with cumulo.connect(ssh.target, name=f"reuse-{attempt}") as cluster:
            TIMES[f"{attempt} connect (reuse test)"] = time.monotonic() - started
            assert cluster.client.submit(sum, [1, 2, 3]).result() == 6
            events = " ".join(m for _, _, m in Registry().events(cluster.id))
    # the second connect (same code, same lock, same local wheels) reuses what the first left on the host
    assert "environment reused" in events, events
    assert "environment built" not in events and "environment updated" not in events, events


def test_unknown_host_key_is_refused_with_its_fingerprint(ssh: sshd.SSHServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    expected = subprocess.run(["ssh-keygen", "-lf", str(ssh.known_hosts)], capture_output=True, text=True).stdout
    with dask.config.set({"cumulo.ssh.known-hosts": str(wrong)}):
        with pytest.raises(HostKeyRefused) as info:
            cumulo.connect(ssh.target, name="badhost")
    assert expected.split()[1] in str(info.value)  # the real host key's SHA256 fingerprint
    assert "ssh-keyscan" in str(info.value)
    with dask.config.set({"cumulo.ssh.known-hosts": str(tmp_path / "missing")}):
        with pytest.raises(HostKeyRefused):
            cumulo.connect(ssh.target, name="nohosts")
    assert Registry().find_open("badhost") is None and Registry().find_open("nohosts") is None


def _fingerprint(known_hosts: Path) -> str:
    """The SHA256 fingerprint of the host key in ``known_hosts``, as ssh-keygen prints it."""
    return subprocess.run(["ssh-keygen", "-lf", str(known_hosts)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.mark.parametrize("known_hosts", ["unset", "missing"])
def test_no_known_hosts_file_is_refused_even_when_ssh_config_checks_nothing(
        ssh: sshd.SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, known_hosts: str) -> None:
    """``UserKnownHostsFile none`` in ~/.ssh/config once made asyncssh accept any key when the file was missing."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host *\n    UserKnownHostsFile none\n")
    monkeypatch.setenv("HOME", str(home))
    path = None if known_hosts == "unset" else str(tmp_path / "no-such-known_hosts")
    host = Host("127.0.0.1", ssh.port, ssh.user)
    with dask.config.set({"cumulo.ssh.known-hosts": path}):
        with pytest.raises(HostKeyRefused) as info:
            asyncio.run(open_session(host))
    text = str(info.value)
    expected = path or str(home / ".ssh" / "known_hosts")
    assert f"{expected} does not exist" in text
    assert _fingerprint(ssh.known_hosts) in text and "ssh-keyscan" in text
    # with the file there, the same config does not turn checking off: a wrong key is still refused
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    with dask.config.set({"cumulo.ssh.known-hosts": str(wrong)}):
        with pytest.raises(HostKeyRefused, match="is not in"):
            asyncio.run(open_session(host))


def _connections_to(port: int) -> list[object]:
    """This process's TCP connections to 127.0.0.1:``port`` that are not closed."""
    import psutil

    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status not in (psutil.CONN_CLOSE, psutil.CONN_TIME_WAIT)]


def test_a_host_that_fails_closes_the_sessions_to_the_others(ssh: sshd.SSHServer) -> None:
    unreachable = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError, match=f"cannot reach {ssh.user}@{unreachable}"):
        cumulo.connect(f"{ssh.target},{unreachable}", name="half")
    assert _connections_to(ssh.port) == []
    time.sleep(2)  # a login still under way when the other host failed would show up by now
    assert _connections_to(ssh.port) == []
    assert Registry().find_open("half") is None


@pytest.fixture
def no_sftp(server: sshd.SSHServer, ssh: sshd.SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[sshd.SSHServer]:
    """A second sshd for the same user with no sftp subsystem, as hardened hosts run (its venvs are reused)."""
    other = sshd.another(server, tmp_path / "sshd-nosftp", free_port(), sftp=False)
    monkeypatch.setenv("DASK_CUMULO__SSH__KNOWN_HOSTS", str(other.known_hosts))
    try:
        with dask.config.set({"cumulo.ssh.known-hosts": str(other.known_hosts)}):
            yield other
    finally:
        sshd.stop(other)


def test_files_travel_without_an_sftp_subsystem(no_sftp: sshd.SSHServer, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # binary, several channel windows long
    note = tmp_path / "note.txt"
    note.write_text("héllo\n")
    folder = f"{no_sftp.home}/cumulo-put-test"

    async def exercise() -> tuple[str, str | None, str | None, str]:
        import asyncssh

        async with await open_session(Host("127.0.0.1", no_sftp.port, no_sftp.user)) as s:
            with pytest.raises((asyncssh.ChannelOpenError, asyncssh.SFTPError)):  # really no sftp here
                async with s._conn.start_sftp_client():
                    pass
            await s.put([blob, note], folder, mode=0o640)
            digest = await s.run(f"sha256sum {folder}/blob.bin && stat -c %a {folder}/blob.bin {folder}")
            return digest, await s.read(f"{folder}/note.txt"), await s.read(f"{folder}/missing"), \
                await s.run(f"ls -A {folder}")

    digest, text, missing, listing = asyncio.run(exercise())
    assert digest.split()[0] == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert digest.split()[-2:] == ["640", "700"]
    assert text == "héllo\n" and missing is None
    assert sorted(listing.split()) == ["blob.bin", "note.txt"]  # no partial file left beside them
    shutil.rmtree(no_sftp.home / "cumulo-put-test")


def test_a_cluster_starts_on_a_host_without_sftp(no_sftp: sshd.SSHServer) -> None:
    target = f"ssh://{no_sftp.user}@127.0.0.1:{no_sftp.port}"
    with cumulo.connect(target, name="nosftp") as cluster:
        assert cluster.client.submit(lambda x: x + 1, 41).result() == 42
    assert Registry().latest("nosftp").state == "closed"


def test_wrong_key_and_unreachable_host(ssh: sshd.SSHServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with dask.config.set({"cumulo.ssh.key-file": str(stranger)}):
        with pytest.raises(CredentialsError, match="refused every SSH key"):
            cumulo.connect(ssh.target, name="wrongkey")
    with pytest.raises(ConnectError, match="cannot reach"):
        cumulo.connect(f"ssh://{ssh.user}@127.0.0.1:{free_port()}", name="nohost")
    with dask.config.set({"cumulo.ssh.python": "/no/such/python3"}):
        with pytest.raises(ProviderError, match="no usable"):
            cumulo.connect(ssh.target, name="nopython")
    assert not Registry().list(include_closed=False)


def test_a_package_the_index_lacks_fails_before_any_process_starts(ssh: sshd.SSHServer) -> None:
    missing = "cumulo-no-such-package-zz==1.0"
    with pytest.raises(EnvironmentSyncError) as info:
        cumulo.connect(ssh.target, name="nopkg", environment=[missing])
    text = str(info.value)
    # the host's index answered and has no such package: cumulo names it (a URL naming it is not enough)
    assert "package 'cumulo-no-such-package-zz' could not be installed on" in text and ssh.user in text, text
    assert "was not found in the package registry" in text and "could not reach" not in text, text
    assert not ssh.user_processes()
    rec = Registry().latest("nopkg")
    assert rec is not None and rec.state == "failed"


def test_an_unreachable_index_on_the_host_is_named_and_no_package_is_blamed(ssh: sshd.SSHServer) -> None:
    port = free_port()  # nothing listens there: the host's index is down, whatever the packages
    uv_toml = ssh.home / ".config" / "uv" / "uv.toml"
    kept = uv_toml.read_text()
    uv_toml.write_text(kept + f'index-url = "http://cumulo:s3cret-token@127.0.0.1:{port}/simple"\n')
    try:
        with pytest.raises(EnvironmentSyncError) as info:
            cumulo.connect(ssh.target, name="noindex", environment=["cumulo-no-such-package-zz==1.0"])
    finally:
        uv_toml.write_text(kept)
    text = str(info.value)
    assert f"could not reach the package index http://127.0.0.1:{port}" in text and ssh.user in text, text
    assert "package 'cumulo-no-such-package-zz'" not in text, text
    assert "s3cret-token" not in text  # the index's credentials never reach an error
    assert not ssh.user_processes()
    rec = Registry().latest("noindex")
    assert rec is not None and rec.state == "failed"


def test_a_killed_kernel_is_reaped_after_its_lease(ssh: sshd.SSHServer) -> None:
    code = ("import cumulo, os, sys; c = cumulo.connect(%r, name='orphan'); print('up', flush=True); "
            "sys.stdin.read()" % ssh.target)
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "DASK_CUMULO__GUARDS__LEASE_GRACE": "2s"})  # its kernel lease
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        assert ssh.user_processes()
    finally:
        owner.kill()  # a kernel killed without closing: nothing stops the cluster in that process
        owner.wait(10)
    time.sleep(3)  # the lease runs out
    reap = _cumulo("reap")
    assert reap.returncode == 0, reap.stderr
    assert "orphan" in reap.stdout and "kernel gone" in reap.stdout, reap.stdout
    wait_for(lambda: not [p for p in ssh.user_processes() if "sshd" not in p], 30, what="processes gone")
    assert Registry().latest("orphan").state in ("closed", "lost")


#: A kernel that connects to the host in argv[1] with a budget and keep_alive (so that its lease does not apply),
#: prints the row id, and waits to be killed.
KEPT_KERNEL = """
import sys, time
import cumulo
cluster = cumulo.connect(sys.argv[1], name="kept-on-host", budget=0.01, keep_alive=True)
print(cluster.id, flush=True)
time.sleep(3600)
"""


def _host_workers_gone(ssh: sshd.SSHServer) -> bool:
    return not [p for p in ssh.user_processes() if "sshd" not in p]


def test_the_reaper_stops_an_ssh_cluster_over_budget_whose_kernel_is_gone(
        ssh: sshd.SSHServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASK_CUMULO__COST__RATE_PER_WORKER_HOUR", "36000")
    with kernel_then_killed(KEPT_KERNEL, ssh.target) as cid:
        assert not _host_workers_gone(ssh)
    Registry().update(cid, heartbeat=time.time() - 3600)  # past the grace a restarted kernel would get
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 36000.0}):
        done = reaper.reap(Registry())
    assert [(r.name, r.action) for r in done] == [("kept-on-host", "stopped")] and "budget" in done[0].reason
    wait_for(lambda: _host_workers_gone(ssh), 30, what="the scheduler and workers gone on the host")
    assert Registry().get(cid).state == "closed"


def test_the_reaper_stops_a_disconnected_ssh_cluster_over_budget_while_its_kernel_lives(
        ssh: sshd.SSHServer) -> None:
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 36000.0, "cumulo.guards.budget-warn-at": []}):
        cluster = cumulo.connect(ssh.target, name="left-on-host", budget=1e6)
        cluster.disconnect()  # this kernel lives on; the cluster is left to its budget
        assert reaper.reap(Registry()) == []  # within its budget: left alone
        assert not _host_workers_gone(ssh)
        Registry().update(cluster.id, budget=0.01)
        done = reaper.reap(Registry())
    assert [(r.name, r.action) for r in done] == [("left-on-host", "stopped")] and "budget" in done[0].reason
    wait_for(lambda: _host_workers_gone(ssh), 30, what="the scheduler and workers gone on the host")
    assert Registry().get(cluster.id).state == "closed"
