"""The Jupyter server's SSH tunnels to dashboards on hosts' loopback, against a real OpenSSH server.

The tunnel code alone (a port forward to a web server on the host's loopback,
the host key check), then an ssh:// cluster whose dashboard listens only on its
host's loopback, served through the Jupyter server's route over the tunnel,
and the tunnel closed once the cluster stops.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest

import cumulo
from cumulo.exceptions import HostKeyRefused
from cumulo.jupyter.tunnels import Tunnels
from cumulo.notebook_server import dashboard_path
from cumulo.providers.ssh.target import Host

from . import sshd
from .conftest import wait_for
from .test_jupyter_handlers import on_server_loop
from .test_ssh import server, ssh  # noqa: F401 - the real sshd and the settings that log in to it

from pytest_jupyter.jupyter_server import *  # noqa: E402,F403 - pytest-jupyter's fixtures, for this module only

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[int]:
    """A plain web server on 127.0.0.1 (the "host's loopback": sshd runs on this machine), serving one file."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("served on the host's loopback\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="test-web", daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def fetch(port: int, path: str = "hello.txt") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as r:
        return r.read().decode()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def host_of(server: sshd.SSHServer) -> Host:
    return Host("127.0.0.1", server.port, server.user)


def test_a_tunnel_reaches_a_port_on_the_hosts_loopback(ssh: sshd.SSHServer, web: int) -> None:  # noqa: F811
    async def run() -> None:
        tunnels = Tunnels()
        try:
            local = await tunnels.port("c1", host_of(ssh), web)
            assert local != web
            text = await asyncio.get_running_loop().run_in_executor(None, fetch, local)
            assert text == "served on the host's loopback\n"
            assert await tunnels.port("c1", host_of(ssh), web) == local  # reused while it is up
            # concurrent first uses (a page and its scripts) share one tunnel
            ports = await asyncio.gather(*(tunnels.port("c2", host_of(ssh), web) for _ in range(4)))
            assert len(set(ports)) == 1 and tunnels.keys() == ["c1", "c2"]
            assert await tunnels.keep_only(["c2"]) == ["c1"]
            assert refused(local) and "c1" not in tunnels
        finally:
            await tunnels.close_all()
        assert refused(ports[0]) and tunnels.keys() == []

    asyncio.run(run())


def test_a_host_key_that_known_hosts_does_not_vouch_for_is_refused(
    ssh: sshd.SSHServer, web: int, tmp_path: Path  # noqa: F811
) -> None:
    other = tmp_path / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_hosts"
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"[127.0.0.1]:{ssh.port} {kind} {key}\n")

    async def run() -> None:
        tunnels = Tunnels()
        with dask.config.set({"cumulo.ssh.known-hosts": str(wrong)}):
            with pytest.raises(HostKeyRefused) as info:
                await tunnels.port("c1", host_of(ssh), web)
        assert "never accepts unknown host keys" in str(info.value) and "ssh-keyscan" in str(info.value)
        assert tunnels.keys() == []

    asyncio.run(run())


@pytest.fixture
def hosts_cluster(ssh: sshd.SSHServer) -> Iterator[Any]:  # noqa: F811
    cluster = cumulo.connect(ssh.target, name="dash-hosts", workers=1, threads_per_worker=1)
    try:
        yield cluster
    finally:
        cluster.close()


@on_server_loop
async def test_an_ssh_clusters_dashboard_through_the_server_over_a_tunnel_closed_when_it_stops(
    jp_fetch: Any, jp_serverapp: Any, hosts_cluster: Any
) -> None:
    # the scheduler binds its dashboard to the host's loopback only; the link it reports is that
    assert hosts_cluster.direct_dashboard_link.startswith("http://127.0.0.1:")

    async def card() -> dict[str, Any]:
        listed = json.loads((await jp_fetch("cumulo", "clusters", method="GET")).body)["clusters"]
        return next(r for r in listed if r["name"] == "dash-hosts")

    # a server that cannot check the host's key: the route says why, and so does the cluster's card after it
    assert (await card())["dashboard_problem"] is None  # not tried yet
    with dask.config.set({"cumulo.ssh.known-hosts": "/nonexistent/known_hosts"}):
        refused_now = await jp_fetch(*dashboard_path("dash-hosts").split("/"), method="GET", raise_error=False)
    assert refused_now.code == 502 and b"/nonexistent/known_hosts does not exist" in refused_now.body
    assert "/nonexistent/known_hosts does not exist" in (await card())["dashboard_problem"]
    response = await jp_fetch(*dashboard_path("dash-hosts", "json/identity.json").split("/"), method="GET")
    assert json.loads(response.body)["address"] == hosts_cluster.address
    status = await jp_fetch(*dashboard_path("dash-hosts").split("/"), method="GET")
    assert b"bokeh" in status.body.lower()
    dashboards = jp_serverapp.web_app.settings["cumulo_dashboards"]
    assert dashboards.tunnels.keys() == [hosts_cluster.id]  # the route went over the server's own tunnel
    assert (await card())["dashboard_problem"] is None  # reached since: the card no longer says it
    target = await dashboards.target("dash-hosts")
    assert target.via.startswith("ssh tunnel to ") and target.port != int(
        hosts_cluster.direct_dashboard_link.split(":")[2].split("/")[0])
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, hosts_cluster.close)
    # the server's own sweep (every few seconds) closes the tunnel of a cluster that stopped
    deadline = loop.time() + 30
    while dashboards.tunnels.keys() and loop.time() < deadline:
        await asyncio.sleep(0.2)
    assert dashboards.tunnels.keys() == [] and refused(target.port)
    gone = await jp_fetch(*dashboard_path("dash-hosts", "json/identity.json").split("/"), method="GET",
                          raise_error=False)
    assert gone.code == 404
