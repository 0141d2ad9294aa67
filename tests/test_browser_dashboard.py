"""A cluster's Dask dashboard opened from the Compute sidebar, in a real JupyterLab in headless Chromium.

A notebook cell connects a cluster (a local one, then an ``ssh://`` one on the
test sshd, whose dashboard listens only on the host's loopback); its
``dashboard_link`` is the Jupyter server's route, found by the kernel itself.
The card's "Dask panes" points dask-labextension's panes at the route (and,
where dask-labextension is turned off, opens the status page in a Lab tab
through the route); while a cell runs work, the task-stream plot draws (its
Bokeh data source fills over the websocket). Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import psutil
import pytest

from . import sshd
from .conftest import wait_for
from .test_browser import ARTIFACTS, lab, page  # noqa: F401 - JupyterLab and Chromium, as the other browser tests
from .test_ssh import server, ssh  # noqa: F401 - the real sshd and the settings that log in to it

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

#: Rows in the task stream's Bokeh data source (its ``duration`` column), read in the dashboard's frame.
TASK_STREAM_ROWS = """() => {
  if (!window.Bokeh || !Bokeh.documents) { return -1; }
  let rows = 0;
  for (const doc of Bokeh.documents) {
    const models = doc._all_models ? Array.from(doc._all_models.values()) : Array.from(doc.all_models || []);
    for (const model of models) {
      const data = model.data;
      if (data && data.duration && data.worker_thread) { rows = Math.max(rows, data.duration.length); }
    }
  }
  return rows;
}"""


def stream_rows(page: Any, iframe: str) -> int:  # noqa: F811
    """The task stream's rows in the frame of the ``iframe`` selector, found afresh each call: a pane that Lab hides
    and shows again may reload its frame, and a read that a reload cut off is "not yet" (-1) rather than an error."""
    try:
        handle = page.locator(iframe).first.element_handle(timeout=5_000)
        frame = handle.content_frame() if handle else None
        return int(frame.evaluate(TASK_STREAM_ROWS)) if frame else -1
    except Exception as e:  # playwright's Error: the frame navigated or went while the read was in flight
        if any(s in str(e) for s in ("context was destroyed", "detached", "Timeout")):
            return -1
        raise


def server_peers(lab: dict[str, Any]) -> set[int]:  # noqa: F811
    """The loopback ports that the Jupyter server process has connections to (the process listening on its port)."""
    port = int(lab["url"].rsplit(":", 1)[1])
    pid = next(c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
               and c.status == psutil.CONN_LISTEN)
    return {c.raddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr}


def run_cell(page: Any, index: int, code: str) -> str:  # noqa: F811
    """Type ``code`` into cell ``index`` (it exists), run it, and return its output's text once it ran."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.wait_for(timeout=20_000)
    cell.locator(".cm-content").click()  # the notebook becomes the active tab again (its kernel's status shows)
    # (in a narrow split the toolbar may fold the indicator away: attached is enough)
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state="attached", timeout=60_000)
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")
    wait_for(lambda: re.search(r"\[\d+\]", cell.locator(".jp-InputPrompt").inner_text()), timeout=300,
             what=f"cell {index} to run")
    assert page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').count() == 0, \
        cell.inner_text()
    return " ".join(cell.locator(".jp-OutputArea-output").all_inner_texts())


def open_panes_and_watch_the_task_stream(lab: dict[str, Any], page: Any, name: str, first: int,  # noqa: F811
                                         shot: str) -> None:
    """From the card: the Dashboard link is the route, "Dask panes" opens it in a Lab tab; work draws the stream."""
    page.click('li[data-id="cumulo-compute"]')
    panel = page.locator("#cumulo-compute")
    card = panel.locator(f'.cumulo-lab-card[data-name="{name}"][data-state="running"]')
    card.wait_for(timeout=60_000)
    route = f"{lab['url']}/cumulo/clusters/{name}/dashboard/status"
    assert card.locator("a.cumulo-dashboard, a.cumulo-lab-dashboard").get_attribute("href") == route
    card.get_by_role("button", name="Dask panes").click()
    tab = page.locator(f"#cumulo-dashboard-{name}")
    tab.wait_for(timeout=30_000)
    frame = page.frame_locator(f"#cumulo-dashboard-{name} iframe")
    frame.locator(".bk-Canvas, .bk-canvas, canvas").first.wait_for(timeout=60_000)
    in_tab = f"#cumulo-dashboard-{name} iframe"
    before = stream_rows(page, in_tab)  # cumulo's own probes on connect may be there already
    assert 0 <= before < 20, before  # Bokeh's document is there, and the work below has not run
    # work on the cluster from the notebook; the task stream fills while it runs
    run_cell(page, first, "import time; c = cluster.client; done = c.gather(c.map(time.sleep, [0.2] * 20, pure=False))")
    # the plot's source is the scheduler's recent task stream (it keeps a recent window): it holds the 20 tasks
    wait_for(lambda: stream_rows(page, in_tab) >= 20, timeout=60,
             what="the task stream to draw the cell's 20 tasks")
    page.wait_for_timeout(1500)  # let the plot paint what its source holds before the picture
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot))
    page.screenshot(path=f"/tmp/{shot}")


@pytest.fixture
def without_dask_labextension(tmp_path: Path) -> None:
    """The Lab that the ``lab`` fixture starts next has dask-labextension turned off (as where it is not
    installed): JupyterLab reads disabledExtensions from labconfig/page_config.json in its config dir."""
    labconfig = tmp_path / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": {"dask-labextension": True}}))


def start_local_cluster(lab: dict[str, Any], page: Any, name: str) -> None:  # noqa: F811
    page.goto(f"{lab['url']}/lab/tree/connect.ipynb?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    out = run_cell(page, 0, f'import cumulo; cluster = cumulo.connect(workers=1, threads_per_worker=2, name="{name}");'
                            " print('LINK', cluster.dashboard_link)")
    # the kernel found its Jupyter server: the link is the server's route, never with the token
    assert f"LINK {lab['url']}/cumulo/clusters/{name}/dashboard/status" in out, out
    assert lab["token"] not in out


def test_dask_panes_point_dask_labextension_at_the_route(lab: dict[str, Any], page: Any) -> None:  # noqa: F811
    """With dask-labextension installed, "Dask panes" fills its URL box with the route; its Task Stream pane
    then draws through the route while a cell runs."""
    if importlib.util.find_spec("dask_labextension") is None:
        pytest.fail("dask-labextension is not installed: pip install -e '.[test]' (the test and lab extras have it)")
    start_local_cluster(lab, page, "dash-panes")
    page.click('li[data-id="cumulo-compute"]')
    card = page.locator('#cumulo-compute .cumulo-lab-card[data-name="dash-panes"][data-state="running"]')
    card.wait_for(timeout=60_000)
    route = f"{lab['url']}/cumulo/clusters/dash-panes/dashboard/status"
    card.get_by_role("button", name="Dask panes").click()
    sidebar = page.locator("#dask-dashboard-launcher")
    sidebar.wait_for(state="visible", timeout=30_000)
    assert sidebar.locator(".dask-URLInput input").input_value() == route
    stream = sidebar.locator('.dask-DashboardListing-item button[value="Task Stream"]:not([disabled])')
    stream.wait_for(timeout=30_000)  # enabled once dask-labextension read the plots' list through the route
    stream.click()
    pane_url = f"{lab['url']}/cumulo/clusters/dash-panes/dashboard/individual-task-stream"
    frame = page.locator(f'iframe[src="{pane_url}"]')
    frame.wait_for(timeout=30_000)  # the pane is dask-labextension's, its frame on the route
    in_pane = f'iframe[src="{pane_url}"]'
    wait_for(lambda: stream_rows(page, in_pane) >= 0, timeout=60, what="Bokeh's document in the pane")
    # dask-labextension opens its pane as a tab over the notebook: back to the notebook to run work, then
    # back to the pane, which kept drawing from its websocket meanwhile
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="connect.ipynb").click()
    run_cell(page, 1, "import time; c = cluster.client; done = c.gather(c.map(time.sleep, [0.2] * 20, pure=False))")
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Task Stream").click()
    wait_for(lambda: stream_rows(page, in_pane) >= 20, timeout=60, what="the pane to draw the cell's 20 tasks")
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-dask-panes.png"))
    page.screenshot(path="/tmp/dashboard-dask-panes.png")


def test_dashboard_of_a_local_cluster_from_the_sidebar(without_dask_labextension: None, lab: dict[str, Any],
                                                       page: Any) -> None:  # noqa: F811
    start_local_cluster(lab, page, "dash-local")
    open_panes_and_watch_the_task_stream(lab, page, "dash-local", 1, "dashboard-local.png")


def test_dashboard_of_an_ssh_cluster_from_the_sidebar(ssh: sshd.SSHServer, without_dask_labextension: None,  # noqa: F811
                                                      lab: dict[str, Any], page: Any) -> None:  # noqa: F811
    page.goto(f"{lab['url']}/lab/tree/connect.ipynb?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    out = run_cell(page, 0, f'import cumulo; cluster = cumulo.connect("{ssh.target}", workers=1, threads_per_worker=2, '
                            'name="dash-hosts"); print("LINK", cluster.dashboard_link)')
    assert f"LINK {lab['url']}/cumulo/clusters/dash-hosts/dashboard/status" in out, out
    open_panes_and_watch_the_task_stream(lab, page, "dash-hosts", 1, "dashboard-ssh.png")
    # the Jupyter server itself holds an SSH connection to the host: the dashboard came over its tunnel
    assert ssh.port in server_peers(lab), server_peers(lab)
    run_cell(page, 2, "cluster.close()")  # nothing left on the host (the ssh fixture checks)
