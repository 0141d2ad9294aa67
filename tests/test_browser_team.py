"""Team clusters in the Compute sidebar: an ssh:// and a gateway:// cluster, each with its cost line.

Both are started from this test process (as a notebook kernel would), against a
real sshd and a real dask-gateway-server on loopback, with a configured price;
the JupyterLab server lists them from the shared registry, and the ssh one is
stopped from its card (the server stops it on the host from its row alone).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dask
import pytest

import cumulo
from cumulo.life.registry import Registry

from . import sshd
from .conftest import free_port, wait_for
from .test_browser import ARTIFACTS, lab, page  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(sshd.why_unavailable() is not None, reason=str(sshd.why_unavailable()))]


@pytest.fixture
def team(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A real sshd and dask-gateway-server, and the settings (here and, via the environment, for the
    JupyterLab server started after this fixture) that reach them and price them."""
    pytest.importorskip("dask_gateway_server")
    from .test_gateway import PASSWORD, USER, GatewayServer
    from .test_ssh import _env_vars, _settings

    ssh_server = sshd.start(tmp_path_factory.mktemp("sshd"), free_port())
    gateway = GatewayServer(tmp_path_factory.mktemp("gateway"))
    settings = _settings(ssh_server) | {"cumulo.ssh.rate-per-hour": 0.4, "cumulo.gateway.rate-per-hour": 1.25}
    for name, value in _env_vars(settings).items():
        monkeypatch.setenv(name, value)
    for name, value in (("TYPE", "basic"), ("KWARGS__USERNAME", USER), ("KWARGS__PASSWORD", PASSWORD)):
        monkeypatch.setenv(f"DASK_GATEWAY__AUTH__{name}", value)
    auth = {"gateway.auth.type": "basic", "gateway.auth.kwargs": {"username": USER, "password": PASSWORD}}
    try:
        with dask.config.set(settings | auth):
            yield {"ssh": ssh_server, "gateway": gateway}
    finally:
        gateway.close()
        sshd.stop(ssh_server)


def test_ssh_and_gateway_clusters_appear_with_their_cost_and_stop_from_the_card(
        team: dict[str, Any], lab: dict[str, Any], page: Any) -> None:
    hosts = cumulo.connect(team["ssh"].target, name="team-hosts")
    shared = cumulo.connect(team["gateway"].address, name="team-gateway", workers=1)
    try:
        page.goto(f"{lab['url']}/lab?token={lab['token']}")
        page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        page.click('li[data-id="cumulo-compute"]')
        panel = page.locator("#cumulo-compute")
        ssh_card = panel.locator('.cumulo-lab-card[data-name="team-hosts"][data-state="running"]')
        gw_card = panel.locator('.cumulo-lab-card[data-name="team-gateway"][data-state="running"]')
        ssh_card.wait_for(timeout=60_000)
        gw_card.wait_for(timeout=60_000)
        ssh_text, gw_text = ssh_card.inner_text(), gw_card.inner_text()
        assert "ssh" in ssh_text and "$0.40/h" in ssh_text and "spent" in ssh_text, ssh_text
        assert "gateway" in gw_text and "$1.25/h" in gw_text and "spent" in gw_text, gw_text
        panel.screenshot(path=str(ARTIFACTS / "sidebar-team.png"))

        # stopping the ssh cluster from its card: the server stops it on the host from the registry row
        ssh_card.get_by_role("button", name="Stop").click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=10_000)
        dialog.locator("button.jp-mod-warn").click()
        panel.locator('.cumulo-lab-card[data-name="team-hosts"]').wait_for(state="detached", timeout=90_000)
        wait_for(lambda: not [p for p in team["ssh"].user_processes() if "sshd" not in p], 30,
                 what="the cluster's processes gone from the host")
        record = Registry(lab["registry"]).latest("team-hosts")
        assert record is not None and record.state == "closed", record
    finally:
        shared.close()
        hosts.close()
