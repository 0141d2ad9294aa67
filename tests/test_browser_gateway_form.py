"""The New cluster form for a dask-gateway, in a real JupyterLab against a real dask-gateway-server.

The JupyterLab server holds the gateway credentials (dask-gateway's
DASK_GATEWAY__AUTH__* environment) and a configured rate; the form reads the
gateway's own options through it, draws them, launches with worker_cores=2,
and the card that appears is stopped from the sidebar.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest

from cumulo.life.registry import Registry

from .test_browser import ARTIFACTS, lab, page  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

NAME = "form-gateway"


@pytest.fixture
def server_gateway(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real dask-gateway-server, and the environment through which the JupyterLab server started after this
    fixture reaches it (its credentials) and prices it."""
    pytest.importorskip("dask_gateway_server")
    from .test_gateway import PASSWORD, USER, GatewayServer

    gateway = GatewayServer(tmp_path_factory.mktemp("gateway"))
    for name, value in (("TYPE", "basic"), ("KWARGS__USERNAME", USER), ("KWARGS__PASSWORD", PASSWORD)):
        monkeypatch.setenv(f"DASK_GATEWAY__AUTH__{name}", value)
    monkeypatch.setenv("DASK_CUMULO__GATEWAY__RATE_PER_HOUR", "1.25")
    monkeypatch.setenv("DASK_GATEWAY__ADDRESS", gateway.url)  # the only gateway the server reads options from
    try:
        yield gateway
    finally:
        gateway.close()


def _off_the_loop(fn: Any, *args: Any) -> Any:
    """Call ``fn`` on a thread: Playwright's sync API runs an event loop in this one, and the gateway
    server's helpers use asyncio.run."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def test_the_form_draws_the_gateways_options_and_launches_with_them(
        server_gateway: Any, lab: dict[str, Any], page: Any) -> None:
    from .test_gateway import PASSWORD

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{lab['url']}/lab?token={lab['token']}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    page.click('li[data-id="cumulo-compute"]')
    panel = page.locator("#cumulo-compute")
    panel.get_by_text("No clusters running").wait_for(timeout=30_000)

    panel.get_by_role("button", name="New cluster").click()
    form = panel.locator("form.cumulo-lab-form")
    form.wait_for(timeout=30_000)
    form.locator('input[name="name"]').fill(NAME)
    form.locator('select[name="provider"]').select_option("gateway")
    assert not form.locator('select[name="gpu"]').is_visible()  # no price list: the gateway sizes its workers
    assert not form.locator('input[name="spot"]').is_visible()
    form.locator('input[name="address"]').fill(server_gateway.address)
    form.get_by_role("button", name="Load options").click()
    cores = form.locator('input[name="option-worker_cores"]')
    cores.wait_for(timeout=30_000)
    assert form.get_by_text("Worker cores").is_visible() and form.get_by_text("Queue", exact=True).is_visible()
    assert cores.input_value() == "1"
    assert (cores.get_attribute("min"), cores.get_attribute("max")) == ("1", "2")
    assert form.locator('input[name="option-queue"]').input_value() == "default"
    cores.fill("2")
    form.locator('input[name="count"]').fill("1")
    estimate = form.locator(".cumulo-lab-estimate").inner_text()
    assert "$1.25/h" in estimate, estimate
    assert form.locator(".cumulo-lab-error").is_hidden()
    form.screenshot(path=str(ARTIFACTS / "gateway-form.png"))
    form.get_by_role("button", name="Launch").click()

    card = panel.locator(f'.cumulo-lab-card[data-name="{NAME}"][data-state="running"]')
    card.wait_for(timeout=120_000)
    text = card.inner_text()
    assert "gateway" in text and "$1.25/h" in text, text
    (gateway_cluster,) = _off_the_loop(server_gateway.clusters)
    record = Registry(lab["registry"]).find_open(NAME)
    assert record is not None and record.provider == "gateway"
    assert record.spec["address"] == server_gateway.address
    assert record.spec["options"] == {"worker_cores": 2, "queue": "default"}
    panel.screenshot(path=str(ARTIFACTS / "sidebar-gateway-form.png"))

    card.get_by_role("button", name="Stop").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10_000)
    dialog.locator("button.jp-mod-warn").click()
    panel.locator(f'.cumulo-lab-card[data-name="{NAME}"]').wait_for(state="detached", timeout=90_000)
    assert gateway_cluster not in _off_the_loop(server_gateway.clusters, ["pending", "running", "stopping"])
    closed = Registry(lab["registry"]).latest(NAME)
    assert closed is not None and closed.state == "closed", closed
    assert PASSWORD not in lab["log"].read_text()
