"""The check that a cloud head's Dask dashboard is served through the Jupyter server over SSH to the head,
never trusting a first use, shared by the Lambda and AWS tests (test_lambda_dashboard.py, test_aws_dashboard.py).

The emulators' instances run their own sshd on their own address, as an image
does (a fresh host key; the login user let in with the key the launch
registered). The head's dashboard listens on its loopback only; the server's
route reaches it over a tunnel that logs in with the cluster's own key and
checks the host key that the head reported over the cluster's TLS at launch.
An sshd answering at the head's address with any other key is refused; the
tunnel closes when the cluster stops, and the route then answers 404.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cumulo.exceptions import ConnectError, HostKeyRefused
from cumulo.jupyter.tunnels import Tunnels
from cumulo.life.registry import Registry
from cumulo.notebook_server import dashboard_path
from cumulo.providers.ssh.target import Host

from . import sshd
from .test_dashboard_tunnels import refused


async def check_head_dashboard(jp_fetch: Any, jp_serverapp: Any, head: Any, *, user: str, ssh_root: Path,
                               tmp_path: Path) -> None:
    """The checks above, on the running cluster ``head`` (closed here), whose instances' sshd files are under
    ``ssh_root``/<instance id> and whose login user is ``user``."""
    name = head.name
    # the host keys recorded at launch are the head's sshd's own, read over the cluster's TLS
    instances = [r for r in Registry().resources(cluster_id=head.id) if r.kind == "instance"]
    (recorded,) = [r for r in instances if "ssh" in r.meta]  # the head's only
    ssh_meta = recorded.meta["ssh"]
    own_key = (ssh_root / recorded.resource_id / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert ssh_meta["host_keys"] == [" ".join(own_key)] and ssh_meta["port"] != 22, ssh_meta
    ip = ssh_meta["ip"]
    assert head.address.startswith(f"tls://{ip}:")

    response = await jp_fetch(*dashboard_path(name, "json/identity.json").split("/"), method="GET")
    # this cluster's scheduler (by its id: it names itself by the address it listens on, the head's private
    # one, where the cloud gives the head two)
    assert json.loads(response.body)["id"] == head.client.scheduler_info()["id"]
    status = await jp_fetch(*dashboard_path(name).split("/"), method="GET")
    assert b"bokeh" in status.body.lower()
    dashboards = jp_serverapp.web_app.settings["cumulo_dashboards"]
    assert dashboards.tunnels.keys() == [head.id]  # the route went over the server's tunnel to the head
    target = await dashboards.target(name)
    assert target.via == f"ssh tunnel to {user}@{ip}:{ssh_meta['port']}"

    # another sshd at the head's address, with another host key: refused before any login
    command, _, port = sshd.instance_command(tmp_path / "impostor", ip, user, "")
    impostor = subprocess.Popen(["bash", "-c", f"exec {command}"])
    try:
        dashboard_port = int(head.direct_dashboard_link.split(":")[2].split("/")[0])
        key_file = next(r.meta["private_key"] for r in Registry().resources(cluster_id=head.id)
                        if r.kind == "ssh-key")
        host = Host(ip, port, user, host_keys=tuple(ssh_meta["host_keys"]), key_file=key_file)
        tunnels = Tunnels()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:  # until the impostor listens
            try:
                with pytest.raises(HostKeyRefused) as info:
                    await tunnels.port("impostor", host, dashboard_port)
                break
            except ConnectError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert "not the one its head reported over the cluster's TLS" in str(info.value)
        assert tunnels.keys() == []
    finally:
        impostor.terminate()
        impostor.wait(10)

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, head.close)
    deadline = loop.time() + 30
    while dashboards.tunnels.keys() and loop.time() < deadline:
        await asyncio.sleep(0.2)
    assert dashboards.tunnels.keys() == [] and refused(target.port)
    gone = await jp_fetch(*dashboard_path(name, "json/identity.json").split("/"), method="GET", raise_error=False)
    assert gone.code == 404
