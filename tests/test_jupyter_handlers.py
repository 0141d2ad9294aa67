"""The REST API of the server extension, through a real Jupyter server (pytest-jupyter's jp_fetch)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from cumulo import exceptions as exc
from cumulo.jupyter.handlers import HTTP_STATUS, http_status
from cumulo.jupyter.manager import ClusterManager

from .test_jupyter_manager import fake_connect

# pytest-jupyter's fixtures, scoped to this module (its autouse fixtures would otherwise wrap every
# test of the suite in a Jupyter ServerApp and an event loop). Tests here are plain functions
# that drive the server's loop with run(); pytest-jupyter's async-test hooks are not needed.
from pytest_jupyter.jupyter_server import *  # noqa: E402,F403

ROUTES = [
    ("GET", "cumulo/clusters"),
    ("POST", "cumulo/clusters"),
    ("POST", "cumulo/clusters/etl/scale"),
    ("DELETE", "cumulo/clusters/etl"),
    ("GET", "cumulo/clusters/etl/usage"),
    ("GET", "cumulo/prices"),
    ("POST", "cumulo/gateway-options"),
]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}


@pytest.fixture
def manager(jp_serverapp: Any) -> Any:
    """The server's manager, with a fake connect() so that launches take milliseconds."""
    m: ClusterManager = jp_serverapp.web_app.settings["cumulo_manager"]
    m._connect = fake_connect([])
    yield m
    m.close_owned()


def on_server_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on pytest-jupyter's event loop (the one the test server listens on)."""
    sig = inspect.signature(test)
    params = list(sig.parameters.values())
    asks = "jp_asyncio_loop" in sig.parameters
    if not asks:
        params.append(inspect.Parameter("jp_asyncio_loop", inspect.Parameter.POSITIONAL_OR_KEYWORD))

    @functools.wraps(test)
    def run(**fixtures: Any) -> None:
        loop = fixtures["jp_asyncio_loop"] if asks else fixtures.pop("jp_asyncio_loop")
        loop.run_until_complete(test(**fixtures))

    run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return run


async def call(jp_fetch: Any, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
    """(status, JSON body) of a request, errors included."""
    kwargs: dict[str, Any] = {"method": method, "raise_error": False}
    if params:
        kwargs["params"] = params
    if body is not None:
        kwargs["body"] = body if isinstance(body, str) else json.dumps(body)
    elif method == "POST":
        kwargs["body"] = ""
    if method == "DELETE":
        kwargs["allow_nonstandard_methods"] = True
    response = await jp_fetch(*path.split("/"), **kwargs)
    return response.code, json.loads(response.body or b"null")


def test_every_cumulo_error_has_a_status() -> None:
    for name in exc.__all__:
        cls = getattr(exc, name)
        assert issubclass(cls, exc.CumuloError)
        assert 400 <= http_status(cls.__new__(cls)) < 600, name  # no __init__: some take extra arguments
    assert http_status(exc.SpecError("x")) == 400
    assert http_status(exc.ClusterNotFound("x")) == 404
    assert http_status(exc.NotOwner("x")) == 409
    assert http_status(exc.CapacityError("x")) == 503  # the nearest class wins over ProviderError's 502
    assert all(issubclass(k, exc.CumuloError) for k in HTTP_STATUS)


@on_server_loop
async def test_extension_is_loaded_and_lists_nothing(jp_fetch: Any, manager: ClusterManager) -> None:
    status, data = await call(jp_fetch, "GET", "cumulo/clusters")
    assert status == 200
    assert data["clusters"] == [] and data["totals"]["running"] == 0


@on_server_loop
async def test_launch_list_scale_usage_stop(jp_fetch: Any, manager: ClusterManager) -> None:
    status, card = await call(jp_fetch, "POST", "cumulo/clusters", {"provider": "local", "name": "etl", "workers": 1})
    assert status == 202 and card["state"] == "launching"
    await asyncio.get_running_loop().run_in_executor(None, manager.wait_launch, "etl", 10)
    status, data = await call(jp_fetch, "GET", "cumulo/clusters")
    assert [(c["name"], c["state"]) for c in data["clusters"]] == [("etl", "running")]
    status, body = await call(jp_fetch, "POST", "cumulo/clusters/etl/scale", {"workers": 3})
    assert (status, body) == (200, {"name": "etl", "workers": 3})
    status, usage = await call(jp_fetch, "GET", "cumulo/clusters/etl/usage")
    assert status == 200 and usage["cluster"]["name"] == "etl"
    status, final = await call(jp_fetch, "DELETE", "cumulo/clusters/etl")
    assert status == 200 and final["state"] == "closed"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "cumulo/clusters", "{not json", 400, "not JSON"),
        ("POST", "cumulo/clusters", {"provider": "local", "workers": -3}, 400, "workers=-3"),
        ("POST", "cumulo/clusters", {"provider": "local", "gpus": 2}, 400, "unknown cluster spec field"),
        ("POST", "cumulo/clusters", {"provider": "nowhere"}, 400, "unknown provider"),
        ("POST", "cumulo/clusters", '{"provider": "local", "budget": NaN}', 400, "NaN is not a JSON value"),
        ("POST", "cumulo/clusters", '{"provider": "local", "budget": Infinity}', 400, "Infinity is not a JSON value"),
        ("POST", "cumulo/clusters", '{"provider": "local", "budget": 1e400}', 400,
         "budget=inf must be a positive number of dollars"),
        ("POST", "cumulo/clusters/ghost/scale", {"workers": 2}, 404, "no open cluster named 'ghost'"),
        ("POST", "cumulo/clusters/ghost/scale", {"workers": "two"}, 400, "whole number"),
        ("DELETE", "cumulo/clusters/ghost", None, 404, "no open cluster named 'ghost'"),
        ("GET", "cumulo/clusters/ghost/usage", None, 404, "no cluster named 'ghost'"),
    ],
)
@on_server_loop
async def test_bad_input_and_unknown_clusters(
    jp_fetch: Any, manager: ClusterManager, method: str, path: str, body: Any, status: int, words: str
) -> None:
    got, reply = await call(jp_fetch, method, path, body)
    assert got == status, reply
    assert words in reply["message"]


@on_server_loop
async def test_scaling_a_kernels_cluster_is_a_conflict(jp_fetch: Any, manager: ClusterManager) -> None:
    manager.registry.create("kernels", "local", {}, state="running")
    status, reply = await call(jp_fetch, "POST", "cumulo/clusters/kernels/scale", {"workers": 2})
    assert status == 409 and reply["error"] == "NotOwner" and "scale it there" in reply["message"]


@on_server_loop
async def test_prices(jp_fetch: Any, manager: ClusterManager) -> None:
    status, data = await call(jp_fetch, "GET", "cumulo/prices", gpu="A100")
    assert status == 200 and data["offers"]
    assert all("A100" in o["gpu_model"] for o in data["offers"])


@pytest.mark.parametrize(("method", "path"), ROUTES)
@on_server_loop
async def test_every_route_refuses_requests_without_credentials(
    jp_serverapp: Any, http_server_client: Any, jp_base_url: str, method: str, path: str
) -> None:
    """No token, no cookie: every verb is refused before it reaches the manager."""
    body = "{}" if method == "POST" else None
    with pytest.raises(HTTPClientError) as info:
        await http_server_client.fetch(jp_base_url + path, method=method, body=body, follow_redirects=False,
                                       allow_nonstandard_methods=method == "DELETE")
    assert info.value.code == 403, info.value  # jupyter_server refuses API calls without a user with 403
    assert jp_serverapp.web_app.settings["cumulo_manager"].list(live=False)["clusters"] == []


@on_server_loop
async def test_reaper_runs_on_a_timer(jp_serverapp: Any) -> None:
    from cumulo.jupyter.app import Reaper

    sweeps: list[int] = []
    manager = jp_serverapp.web_app.settings["cumulo_manager"]
    reaper = Reaper(manager, 0.05)
    manager._reap = lambda registry, dry_run: sweeps.append(1) or []
    reaper.start()
    try:
        for _ in range(100):
            if len(sweeps) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await reaper.stop()
    assert len(sweeps) >= 2 and reaper.sweeps >= 2


def test_enabled_on_install_by_a_config_file(tmp_path: Any) -> None:
    """The shipped jupyter-config file enables the extension; `jupyter server extension list` reads it."""
    import os
    import shutil
    from pathlib import Path

    config = Path(__file__).resolve().parent.parent / "jupyter-config" / "jupyter_server_config.d" / "cumulo.json"
    assert json.loads(config.read_text()) == {"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}
    # a copy as the "user" config dir: jupyter writes a 'migrated' marker into the dir it is given
    (tmp_path / "jupyter_server_config.d").mkdir()
    shutil.copy(config, tmp_path / "jupyter_server_config.d" / "cumulo.json")
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path)},
    )
    text = out.stdout + out.stderr
    assert "cumulo.jupyter" in text and "enabled" in text and "OK" in text.split("cumulo.jupyter", 1)[1], text


@on_server_loop
async def test_cookie_authenticated_post_without_xsrf_is_refused(
    jp_serverapp: Any, http_server_client: Any, jp_base_url: str, jp_auth_header: dict[str, str]
) -> None:
    """A browser session (login cookie) must also send the XSRF token: a cross-site form cannot launch."""
    token = jp_auth_header["Authorization"].split()[-1]
    login = await http_server_client.fetch(f"{jp_base_url}api/status?token={token}")
    cookies = [c.split(";")[0] for c in login.headers.get_list("Set-Cookie")]
    assert any(c.startswith("username-") for c in cookies), cookies
    cookie = "; ".join(cookies)
    ok = await http_server_client.fetch(f"{jp_base_url}cumulo/clusters", headers={"Cookie": cookie})
    assert ok.code == 200  # the cookie alone is a valid session for reading
    with pytest.raises(HTTPClientError) as info:
        await http_server_client.fetch(f"{jp_base_url}cumulo/clusters", method="POST", headers={"Cookie": cookie},
                                       body=json.dumps({"provider": "local"}))
    assert info.value.code == 403 and b"_xsrf" in (info.value.response.body or b"")
    assert jp_serverapp.web_app.settings["cumulo_manager"].list(live=False)["clusters"] == []


def strict_json(body: bytes) -> Any:
    """Parse as a browser's JSON.parse would: NaN, Infinity and -Infinity are errors."""
    def refuse(word: str) -> Any:
        raise ValueError(f"{word} is not JSON")

    return json.loads(body, parse_constant=refuse)


def test_to_json_turns_non_finite_numbers_into_null() -> None:
    import numpy as np

    from cumulo.jupyter.manager import to_json

    data = {"a": float("inf"), "b": [np.float64("nan"), -float("inf")], "c": 1.5, "d": (1, np.int64(2))}
    assert strict_json(to_json(data).encode()) == {"a": None, "b": [None, None], "c": 1.5, "d": [1, 2]}


@on_server_loop
async def test_replies_never_carry_non_json_numbers(jp_fetch: Any, manager: ClusterManager) -> None:
    """A row whose budget is inf (written before ClusterSpec refused it) must not break the sidebar."""
    manager.registry.create("unbounded", "local", {}, state="running", budget=float("inf"))
    response = await jp_fetch("cumulo", "clusters", method="GET")
    data = strict_json(response.body)
    assert [(c["name"], c["budget"]) for c in data["clusters"]] == [("unbounded", None)]
    response = await jp_fetch("cumulo", "clusters", "unbounded", "usage", method="GET")
    assert strict_json(response.body)["cluster"]["budget"] is None


@pytest.fixture
def bad_lease_grace() -> Any:
    """A config value that the server's reaper would only trip over at its first sweep."""
    import dask

    with dask.config.set({"cumulo.guards.lease-grace": "soon"}):
        yield


@on_server_loop
async def test_server_start_refuses_bad_config_naming_the_key(
    bad_lease_grace: None, jp_fetch: Any, jp_serverapp: Any
) -> None:
    """No dead reaper: the error names the key, no reaper runs, and the sidebar's calls answer with it."""
    settings = jp_serverapp.web_app.settings
    assert "cumulo.guards.lease-grace: 'soon' is not a duration" in str(settings["cumulo_config_error"])
    (extension,) = jp_serverapp.extension_manager.extension_apps["cumulo.jupyter"]
    assert extension.reaper.interval == 0  # no reaper runs on a config it cannot read
    for method, path in (("GET", "cumulo/clusters"), ("POST", "cumulo/clusters"), ("GET", "cumulo/prices")):
        status, reply = await call(jp_fetch, method, path, {"provider": "local"} if method == "POST" else None)
        assert status == 400 and reply["error"] == "ConfigError", reply
        assert "cumulo.guards.lease-grace: 'soon' is not a duration; use e.g. '2m'" in reply["message"]
    assert settings["cumulo_manager"].list(live=False)["clusters"] == []  # nothing was launched
