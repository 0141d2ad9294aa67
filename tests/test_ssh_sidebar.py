"""An ssh:// cluster launched from the sidebar's New cluster form: the Jupyter server's manager launches it
on a real OpenSSH server on loopback (the form's hosts field is the target), owns it, offers no Scale
(the provider's ``can_scale`` is False), and stops it with nothing left running on the host.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cumulo.jupyter.manager import ClusterManager
from cumulo.life.registry import Registry

from . import sshd
from .conftest import wait_for
from .test_ssh import server, ssh  # noqa: F401 - the real sshd and the settings that log in to it

pytestmark = [pytest.mark.skipif(sshd.why_unavailable() is not None, reason=str(sshd.why_unavailable())),
              pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture
def manager() -> Iterator[ClusterManager]:
    m = ClusterManager(Registry())
    try:
        yield m
    finally:
        m.close_owned()


def test_the_sidebar_launches_and_stops_an_ssh_cluster(ssh: sshd.SSHServer, manager: ClusterManager) -> None:  # noqa: F811
    assert "ssh" in manager.prices()["providers"]  # the form offers it
    card = manager.launch({"provider": "ssh", "address": ssh.target, "name": "lab-hosts", "workers": 1})
    assert card["state"] == "launching" and card["provider"] == "ssh"
    cluster = manager.wait_launch("lab-hosts", timeout=540)
    rows = {r["name"]: r for r in manager.list()["clusters"]}
    assert cluster is not None, rows.get("lab-hosts")  # a failed launch's card says why
    row = rows["lab-hosts"]
    assert row["state"] == "running" and row["owned_by"] == "server" and row["workers"] == 1
    assert row["scalable"] is False and row["stoppable"] is True
    assert cluster.client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
    assert ssh.user_processes(), "the scheduler and worker run on the host"
    final = manager.stop("lab-hosts")
    assert final["state"] == "closed"
    wait_for(lambda: not [p for p in ssh.user_processes() if "sshd" not in p], 30, what="processes gone on the host")
