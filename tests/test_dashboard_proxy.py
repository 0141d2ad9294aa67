"""A cluster's Dask dashboard through the Jupyter server's route, ``cumulo/clusters/<name>/dashboard/<path>``.

A real Jupyter server (pytest-jupyter) with cumulo's extension, a real local
cluster (scheduler, worker and dashboard processes on 127.0.0.1): the route
serves the status page, JSON endpoints and Bokeh's websocket, only behind the
server's login, and answers 404 in one line for clusters it cannot serve.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

import cumulo
from cumulo.notebook_server import dashboard_path, dashboard_route, server_url

from .conftest import free_port
from .test_jupyter_handlers import on_server_loop

from pytest_jupyter.jupyter_server import *  # noqa: E402,F403 - pytest-jupyter's fixtures, for this module only

NAME = "dash"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A real local cluster, registered in this test's registry (which the server reads too)."""
    with cumulo.connect(workers=1, threads_per_worker=1, name=NAME) as c:
        yield c


async def get(jp_fetch: Any, name: str, page: str, **kwargs: Any) -> Any:
    return await jp_fetch(*dashboard_path(name, page).split("/"), method="GET", raise_error=False, **kwargs)


def bokeh_token(page: str) -> str:
    """The session token that a Bokeh page hands its websocket (as the browser's bokeh.js reads it)."""
    found = re.search(r'"token":\s*"([^"]+)"', page)
    assert found, "no Bokeh session token in the page"
    return found.group(1)


@on_server_loop
async def test_the_route_serves_the_status_page_and_json(jp_fetch: Any, cluster: Any) -> None:
    response = await get(jp_fetch, NAME, "status")
    page = response.body.decode()
    assert response.code == 200, page
    assert "bokeh" in page.lower() and bokeh_token(page)
    # the same page as the dashboard serves directly (the route forwards, it does not make its own)
    with urllib.request.urlopen(cluster.direct_dashboard_link, timeout=10) as direct:
        assert re.sub(r'"token":\s*"[^"]+"', "", direct.read().decode())[:2000] == \
            re.sub(r'"token":\s*"[^"]+"', "", page)[:2000]
    identity = await get(jp_fetch, NAME, "json/identity.json")
    assert identity.code == 200 and identity.headers["Content-Type"].startswith("application/json")
    ident = json.loads(identity.body)
    assert ident["type"] == "Scheduler" and ident["address"] == cluster.address
    counts = await get(jp_fetch, NAME, "json/counts.json")
    assert counts.code == 200 and json.loads(counts.body)["workers"] == 1


@on_server_loop
async def test_the_dashboards_redirects_stay_under_the_route(jp_fetch: Any, jp_base_url: str, cluster: Any) -> None:
    """The dashboard sends ``/`` to ``/status``: the browser must land on the route, not on the server's root."""
    response = await get(jp_fetch, NAME, "", follow_redirects=False)
    assert response.code in (301, 302, 303, 307, 308)
    assert response.headers["Location"].startswith(jp_base_url + f"cumulo/clusters/{NAME}/dashboard/")
    response = await jp_fetch("cumulo", "clusters", NAME, "dashboard", method="GET", raise_error=False,
                              follow_redirects=False)
    assert response.headers["Location"] == jp_base_url + dashboard_path(NAME)


@on_server_loop
async def test_the_websocket_upgrade_works(jp_fetch: Any, jp_ws_fetch: Any, cluster: Any) -> None:
    """Bokeh's plots stream over a websocket: through the route it opens, and the server's first message arrives."""
    page = (await get(jp_fetch, NAME, "status")).body.decode()
    ws = await jp_ws_fetch(*dashboard_path(NAME, "status/ws").split("/"), subprotocols=["bokeh", bokeh_token(page)])
    try:
        first = json.loads(await ws.read_message())
        assert first["msgtype"] == "ACK"
    finally:
        ws.close()


@pytest.mark.parametrize("page", ["status", "json/identity.json", "status/ws"])
@on_server_loop
async def test_the_route_refuses_without_a_token(
    http_server_client: Any, jp_base_url: str, jp_http_port: int, cluster: Any, page: str
) -> None:
    """No token, no cookie: no byte of the dashboard (a page redirects to the login, a websocket is refused)."""
    if page.endswith("/ws"):
        request = HTTPRequest(f"ws://127.0.0.1:{jp_http_port}{jp_base_url}{dashboard_path(NAME, page)}")
        with pytest.raises(HTTPClientError) as info:
            await tornado.websocket.websocket_connect(request, subprotocols=["bokeh", "not-a-token"])
        assert info.value.code == 403
        return
    with pytest.raises(HTTPClientError) as info:
        await http_server_client.fetch(jp_base_url + dashboard_path(NAME, page), follow_redirects=False)
    assert info.value.code in (302, 403)
    if info.value.code == 302:
        assert "/login" in info.value.response.headers["Location"]
    assert b"bokeh" not in (info.value.response.body or b"") and b"Scheduler" not in (info.value.response.body or b"")


@on_server_loop
async def test_unknown_cluster_is_a_404_with_a_short_message(jp_fetch: Any) -> None:
    response = await get(jp_fetch, "ghost", "status")
    text = response.body.decode()
    assert response.code == 404, text
    assert "no running cluster named 'ghost'" in text and "cumulo ls" in text
    assert len(text.splitlines()) == 1 and "Traceback" not in text
    # a name no cluster can have never matches the route: the server's own 404
    assert (await get(jp_fetch, "Not_A-Name", "status")).code == 404


@on_server_loop
async def test_a_stopped_cluster_is_a_404(jp_fetch: Any) -> None:
    with cumulo.connect(workers=1, threads_per_worker=1, name="brief") as c:
        assert (await get(jp_fetch, "brief", "json/identity.json")).code == 200
        assert c.status == "running"
    response = await get(jp_fetch, "brief", "json/identity.json")
    assert response.code == 404 and "no running cluster named 'brief'" in response.body.decode()


def test_dashboard_link_is_the_route_under_a_jupyter_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """In a kernel (JupyterHub's prefix, or the server info file of the kernel's parent) the link is the route;
    elsewhere it is the dashboard's own address."""
    import os

    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    assert server_url() is None
    with cumulo.connect(workers=1, threads_per_worker=1, name="linked") as c:
        assert c.dashboard_link == c.direct_dashboard_link and c.dashboard_link.startswith("http://127.0.0.1:")
        monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ana/")
        assert c.dashboard_link == "/user/ana/cumulo/clusters/linked/dashboard/status"
        assert "/user/ana/cumulo/clusters/linked/dashboard/status" in c._repr_html_()
        monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
        # what jupyter_server writes for itself, token included: the link never carries the token
        info = {"url": "http://localhost:8890/base/", "base_url": "/base/", "token": "s3cr3t-t0ken", "pid": os.getppid()}
        (tmp_path / f"jpserver-{os.getppid()}.json").write_text(json.dumps(info))
        assert c.dashboard_link == "http://localhost:8890/base/cumulo/clusters/linked/dashboard/status"
        assert "s3cr3t" not in c._repr_html_()
        assert dashboard_route("linked", "json/counts.json") == \
            "http://localhost:8890/base/cumulo/clusters/linked/dashboard/json/counts.json"
        # the registry keeps the dashboard's own address: the server forwards to it
        assert c.registry.get(c.id).dashboard == c.direct_dashboard_link


@on_server_loop
async def test_a_dashboard_that_does_not_answer_is_a_502_saying_so(jp_fetch: Any, jp_serverapp: Any) -> None:
    """Registered as running, but nothing listens at its dashboard (a scheduler that died unseen): no 500 page."""
    registry = jp_serverapp.web_app.settings["cumulo_manager"].registry
    registry.create("mute", "local", {}, state="running", dashboard=f"http://127.0.0.1:{free_port()}/status")
    response = await get(jp_fetch, "mute", "json/identity.json")
    text = response.body.decode()
    assert response.code == 502, text
    assert "the dashboard of cluster 'mute' did not answer" in text and len(text.splitlines()) == 1
    # a row without a dashboard (a scheduler that serves none) is a 404 that says so
    registry.create("blind", "local", {}, state="running")
    response = await get(jp_fetch, "blind", "status")
    assert response.code == 404 and "serves no Dask dashboard" in response.body.decode()


def test_cumulo_ls_dashboards(cluster: Any) -> None:
    """`cumulo ls --dashboards`: the route in a Jupyter terminal (jupyter_server sets JUPYTER_SERVER_URL there),
    the dashboard's own address in any other terminal."""
    import os
    import subprocess

    from .conftest import BIN

    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTERHUB_SERVICE_PREFIX", "JUPYTER_SERVER_URL")}
    plain = subprocess.run([str(BIN / "cumulo"), "ls", "--dashboards"], capture_output=True, text=True, timeout=120,
                           env=env)
    assert plain.returncode == 0, plain.stderr
    assert "dashboard" in plain.stdout.splitlines()[0] and cluster.direct_dashboard_link in plain.stdout
    terminal = subprocess.run([str(BIN / "cumulo"), "ls", "--dashboards"], capture_output=True, text=True,
                              timeout=120, env={**env, "JUPYTER_SERVER_URL": "http://127.0.0.1:8888/lab-base/"})
    assert f"http://127.0.0.1:8888/lab-base/cumulo/clusters/{NAME}/dashboard/status" in terminal.stdout, terminal.stdout
    assert cluster.direct_dashboard_link not in terminal.stdout
    without = subprocess.run([str(BIN / "cumulo"), "ls"], capture_output=True, text=True, timeout=120, env=env)
    assert "dashboard" not in without.stdout.splitlines()[0]


@on_server_loop
async def test_a_cookie_alone_cannot_post_to_a_dashboard(
    http_server_client: Any, jp_base_url: str, jp_auth_header: dict[str, str], cluster: Any
) -> None:
    """A browser session may read the dashboard with its login cookie, but another site's form must not be
    able to make it send a request that changes something: without the XSRF token a POST is refused."""
    token = jp_auth_header["Authorization"].split()[-1]
    login = await http_server_client.fetch(f"{jp_base_url}api/status?token={token}")
    cookie = "; ".join(c.split(";")[0] for c in login.headers.get_list("Set-Cookie"))
    url = jp_base_url + dashboard_path(NAME, "json/identity.json")
    ok = await http_server_client.fetch(url, headers={"Cookie": cookie})
    assert ok.code == 200 and json.loads(ok.body)["type"] == "Scheduler"
    with pytest.raises(HTTPClientError) as info:
        await http_server_client.fetch(url, method="POST", body="{}", headers={"Cookie": cookie})
    assert info.value.code == 403 and b"_xsrf" in (info.value.response.body or b"")
