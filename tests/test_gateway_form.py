"""The sidebar's New cluster form for a dask-gateway: the server reads the gateway's options, launches with them.

Against the real dask-gateway-server of tests/test_gateway.py (UnsafeLocalBackend,
SimpleAuthenticator with a password, options worker_cores 1..2 and queue):
``POST cumulo/gateway-options`` through a real Jupyter server (pytest-jupyter's
jp_fetch), its errors (a wrong password, nothing listening, a gateway that never
answers while the server keeps serving, malformed and insecure addresses), and a
launch through the ClusterManager with provider gateway and the form's options.

The server asks only the gateway of its own ``gateway.address`` config: a fake
gateway on loopback that records every request's Authorization header shows that
another address, a GET (no XSRF check in jupyter_server) and a cookie-only POST
without the XSRF token never reach it, and that the configured one does get the
credentials (so the fake would have seen them).
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest

from cumulo.exceptions import SpecError
from cumulo.jupyter.manager import ClusterManager
from cumulo.life.registry import Registry

from .conftest import free_port
from .test_jupyter_handlers import call, on_server_loop
from .test_jupyter_manager import fake_connect

# pytest-jupyter's fixtures, scoped to this module (as in test_jupyter_handlers.py)
from pytest_jupyter.jupyter_server import *  # noqa: E402,F403

SCHEMA = [
    {"name": "worker_cores", "label": "Worker cores", "kind": "integer", "default": 1, "min": 1, "max": 2,
     "choices": None},
    {"name": "queue", "label": "Queue", "kind": "string", "default": "default", "min": None, "max": None,
     "choices": None},
]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("dask_gateway_server", reason="the gateway tests need dask-gateway-server (the test extra)")
    from .test_gateway import GatewayServer

    server = GatewayServer(tmp_path_factory.mktemp("gateway"))
    try:
        yield server
    finally:
        server.close()


def _auth(password: str) -> dict[str, Any]:
    from .test_gateway import USER

    return {"gateway.auth.type": "basic", "gateway.auth.kwargs": {"username": USER, "password": password}}


@pytest.fixture
def auth() -> Iterator[str]:
    """The server's own credentials: dask-gateway config in this process, where the test server runs."""
    from .test_gateway import PASSWORD

    with dask.config.set(_auth(PASSWORD)):
        yield PASSWORD


def configured(address: str) -> Any:
    """The server's own gateway (dask-gateway's ``gateway.address`` config), as an admin would set it."""
    scheme, _, rest = address.partition("://")
    return dask.config.set({"gateway.address": ("https" if scheme == "gateway+https" else "http") + "://" + rest})


async def options(jp_fetch: Any, address: str | None = None) -> tuple[int, Any]:
    """(status, JSON) of ``POST cumulo/gateway-options`` as the sidebar sends it."""
    return await call(jp_fetch, "POST", "cumulo/gateway-options", {} if address is None else {"address": address})


@on_server_loop
async def test_the_endpoint_returns_the_gateways_fields_and_rate(jp_fetch: Any, gateway: Any, auth: str) -> None:
    with configured(gateway.address):
        status, data = await options(jp_fetch, gateway.address)
        assert status == 200, data
        assert data == {"address": gateway.address, "fields": SCHEMA, "rate_per_hour": None}
        assert await options(jp_fetch) == (200, data)  # no address: the configured gateway
        with dask.config.set({"cumulo.gateway.rate-per-hour": 1.25}):
            status, data = await options(jp_fetch, gateway.address + "/")
    assert (status, data["address"], data["rate_per_hour"]) == (200, gateway.address, 1.25)


@on_server_loop
async def test_a_wrong_password_is_a_clean_credentials_error(jp_fetch: Any, gateway: Any) -> None:
    from .test_gateway import PASSWORD, USER

    wrong = "wrong-" + secrets.token_hex(6)
    with dask.config.set(_auth(wrong)), configured(gateway.address):
        response = await jp_fetch("cumulo", "gateway-options", method="POST",
                                  body=json.dumps({"address": gateway.address}), raise_error=False)
    text = response.body.decode()
    data = json.loads(text)
    assert response.code == 424 and data["error"] == "CredentialsError", data
    assert "HTTP 401" in data["message"] and repr(USER) in data["message"]
    assert "DASK_GATEWAY__AUTH__KWARGS__PASSWORD" in data["message"]  # what to set, never its value
    assert wrong not in text and PASSWORD not in text


@on_server_loop
async def test_nothing_listening_is_a_clean_connect_error(jp_fetch: Any, auth: str) -> None:
    address = f"gateway://127.0.0.1:{free_port()}"
    with configured(address):
        status, data = await options(jp_fetch, address)
    assert status == 502 and data["error"] == "ConnectError", data
    assert f"cannot reach the dask-gateway at {address}" in data["message"]
    assert auth not in json.dumps(data)


@on_server_loop
async def test_a_gateway_that_never_answers_does_not_block_the_server(jp_fetch: Any, auth: str) -> None:
    """The request waits on a thread: the server lists clusters meanwhile, and the wait is bounded."""
    held = []
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.setblocking(False)
        address = f"gateway://127.0.0.1:{silent.getsockname()[1]}"
        with dask.config.set({"cumulo.gateway.timeout": "5s"}), configured(address):
            started = time.monotonic()
            slow = asyncio.ensure_future(options(jp_fetch, address))
            for _ in range(200):  # until the server's request reaches the gateway and waits there
                try:
                    held.append(silent.accept()[0])
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            assert held, "the options request never reached the gateway"
            status, listing = await call(jp_fetch, "GET", "cumulo/clusters")
            listed_after = time.monotonic() - started
            assert status == 200 and listing["clusters"] == []
            assert not slow.done()
            status, data = await slow
        for conn in held:
            conn.close()
    # listed while the gateway request still waited: a server blocked by it could only answer after its 5 s
    assert listed_after < 5, listed_after
    assert status == 502 and data["error"] == "ConnectTimeout", data
    assert "did not answer within 5s" in data["message"]


@pytest.mark.parametrize(
    ("server_gateway", "address", "status", "words"),
    [
        ("gateway://127.0.0.1:1", "http://127.0.0.1:8000", 400, "not a gateway address"),
        ("gateway://127.0.0.1:1", "gateway://127.0.0.1:notaport", 400, "no valid port"),
        ("gateway://10.0.0.9:8000", "", 400, "plain http"),  # refused before any traffic: InsecureAddress
        (None, "", 400, "has no dask-gateway configured"),
        (None, "gateway://127.0.0.1:1", 400, "has no dask-gateway configured"),
        ("gateway://127.0.0.1:1", "gateway://127.0.0.1:2", 400, "only from its own gateway, gateway://127.0.0.1:1"),
    ],
)
@on_server_loop
async def test_bad_addresses_are_400s(jp_fetch: Any, auth: str, server_gateway: str | None, address: str,
                                      status: int, words: str) -> None:
    with configured(server_gateway) if server_gateway else dask.config.set({"gateway.address": None}):
        got, data = await options(jp_fetch, address)
    assert got == status, data
    assert words in data["message"]


@on_server_loop
async def test_credentials_in_the_address_are_refused_and_not_echoed(jp_fetch: Any, auth: str) -> None:
    secret = "s3cr3t-" + secrets.token_hex(4)
    with configured("gateway://127.0.0.1:1"):
        got, data = await options(jp_fetch, f"gateway://bob:{secret}@127.0.0.1:1")
    assert got == 400 and "must not carry a user name or password" in data["message"]
    assert secret not in json.dumps(data)


class FakeGateway:
    """An HTTP server on loopback that answers like a dask-gateway's options API and records every request's
    Authorization header: 401 without one (dask-gateway's client then sends its credentials), options with one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                auth = self.headers.get("Authorization")
                fake.seen.append(("GET", self.path, auth))
                body = json.dumps({"cluster_options": []}).encode()
                self.send_response(200 if auth else 401)
                if not auth:
                    self.send_header("WWW-Authenticate", 'Basic realm="gateway"')
                    body = b"{}"
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"gateway://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-gateway", daemon=True)
        self.thread.start()

    def passwords(self) -> list[str]:
        """The passwords that reached this server, decoded from Basic Authorization headers."""
        return [base64.b64decode(a.split()[1]).decode().split(":", 1)[1] for _, _, a in self.seen
                if a and a.startswith("Basic ")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeGateway, FakeGateway]]:
    """(the server's configured gateway, an attacker's host), both recording what reaches them."""
    own, attacker = FakeGateway(), FakeGateway()
    try:
        with configured(own.address):
            yield own, attacker
    finally:
        own.close()
        attacker.close()


@on_server_loop
async def test_another_address_never_reaches_the_network_nor_gets_the_credentials(
        jp_fetch: Any, auth: str, fakes: tuple[FakeGateway, FakeGateway]) -> None:
    own, attacker = fakes
    status, data = await options(jp_fetch, attacker.address)
    assert status == 400 and data["error"] == "SpecError" and own.address in data["message"], data
    # the old route, a GET anyone's page can make the browser send, is gone
    response = await jp_fetch("cumulo", "gateway-options", params={"address": attacker.address}, raise_error=False)
    assert response.code == 405
    await asyncio.sleep(0.2)
    assert attacker.seen == []
    # the configured gateway does get the server's credentials: the fake would have recorded them
    status, data = await options(jp_fetch)
    assert (status, data["address"], data["fields"]) == (200, own.address, []), data
    assert own.passwords() == [auth]
    assert attacker.seen == []


@on_server_loop
async def test_a_browser_session_needs_the_xsrf_token(
        jp_serverapp: Any, http_server_client: Any, jp_base_url: str, jp_auth_header: dict[str, str], auth: str,
        fakes: tuple[FakeGateway, FakeGateway]) -> None:
    """With only the login cookie (what a cross-site page makes the browser send), nothing is called."""
    own, _ = fakes
    token = jp_auth_header["Authorization"].split()[-1]
    login = await http_server_client.fetch(f"{jp_base_url}api/status?token={token}")
    cookie = "; ".join(c.split(";")[0] for c in login.headers.get_list("Set-Cookie"))
    assert "username-" in cookie, cookie
    url = f"{jp_base_url}cumulo/gateway-options"
    for method, body in (("GET", None), ("POST", "{}")):
        response = await http_server_client.fetch(url, method=method, body=body, headers={"Cookie": cookie},
                                                  raise_error=False)
        assert response.code in (403, 405), (method, response.code)
    await asyncio.sleep(0.2)
    assert own.seen == []
    # the same session with the XSRF token (JupyterLab sends it from the _xsrf cookie) is served
    xsrf = secrets.token_hex(8)
    response = await http_server_client.fetch(url, method="POST", body="{}", raise_error=False,
                                              headers={"Cookie": f"{cookie}; _xsrf={xsrf}", "X-XSRFToken": xsrf})
    assert response.code == 200, response.body
    assert own.passwords() == [auth]


def test_every_kind_of_dask_gateway_field_becomes_plain_data() -> None:
    options_module = pytest.importorskip("dask_gateway.options")
    from cumulo.providers.gateway.options import form_fields

    o = options_module
    options = o.Options(o.Float("memory", 2.5, min=1, label="Memory (GiB)"), o.Select("size", "m", options=["s", "m"]),
                        o.Bool("gpu", True), o.Mapping("env", {"A": "1"}), o.String("queue", ""))
    assert json.loads(json.dumps(form_fields(options))) == [
        {"name": "memory", "label": "Memory (GiB)", "kind": "float", "default": 2.5, "min": 1.0, "max": None,
         "choices": None},
        {"name": "size", "label": "size", "kind": "select", "default": "m", "min": None, "max": None,
         "choices": ["s", "m"]},
        {"name": "gpu", "label": "gpu", "kind": "bool", "default": True, "min": None, "max": None, "choices": None},
        {"name": "env", "label": "env", "kind": "mapping", "default": {"A": "1"}, "min": None, "max": None,
         "choices": None},
        {"name": "queue", "label": "queue", "kind": "string", "default": "", "min": None, "max": None,
         "choices": None},
    ]


def test_a_launch_passes_the_gateway_address_and_options_to_connect(registry: Registry) -> None:
    calls: list[dict[str, Any]] = []
    manager = ClusterManager(registry, connect=fake_connect(calls))
    try:
        with configured("gateway://127.0.0.1:8000"):
            manager.launch({"provider": "gateway", "address": "gateway://127.0.0.1:8000", "name": "gw",
                            "workers": 2, "budget": 5, "options": {"worker_cores": 2, "queue": "default"}})
        manager.wait_launch("gw", 10)
    finally:
        manager.close_owned()
    assert calls == [{"provider": "gateway://127.0.0.1:8000", "name": "gw", "workers": 2, "budget": 5.0,
                      "spot": False, "options": {"worker_cores": 2, "queue": "default"}}]


def test_an_address_of_another_provider_is_refused(registry: Registry) -> None:
    manager = ClusterManager(registry, connect=fake_connect([]))
    try:
        with pytest.raises(SpecError, match="is for provider 'gateway', not 'local'"):
            manager.validate({"provider": "local", "address": "gateway://127.0.0.1:8000"})
    finally:
        manager.close_owned()


@on_server_loop
async def test_a_launch_on_another_gateway_is_refused_before_any_request(
        jp_fetch: Any, fakes: tuple[FakeGateway, FakeGateway]) -> None:
    """The server launches only on its own gateway: a request naming another never gets its credentials."""
    own, attacker = fakes
    status, data = await call(jp_fetch, "POST", "cumulo/clusters",
                              {"provider": "gateway", "address": attacker.address, "name": "elsewhere"})
    assert status == 400 and data["error"] == "SpecError" and own.address in data["message"], data
    await asyncio.sleep(0.2)
    assert attacker.seen == [] and own.seen == []


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_a_launch_from_the_server_starts_the_gateway_cluster_with_the_forms_options(
        gateway: Any, auth: str, registry: Registry, registry_path: Path) -> None:
    manager = ClusterManager(registry)
    try:
        with configured(gateway.address):
            form = manager.gateway_options()
            options = {f["name"]: f["default"] for f in form["fields"]} | {"worker_cores": 2}
            card = manager.launch({"provider": "gateway", "address": form["address"], "name": "form-gw",
                                   "workers": 1, "options": options})
        assert (card["provider"], card["state"]) == ("gateway", "launching")
        cluster = manager.wait_launch("form-gw", 120)
        assert cluster is not None, manager.list(live=False)["clusters"]
        assert cluster.provider == "gateway" and len(gateway.clusters()) == 1
        assert list(cluster.client.nthreads().values()) == [2]  # worker_cores=2 reached the gateway's workers
        record = registry.find_open("form-gw")
        assert record is not None and record.spec["address"] == gateway.address
        assert record.spec["options"] == {"worker_cores": 2, "queue": "default"}
        final = manager.stop("form-gw")
        assert final["state"] == "closed"
        assert gateway.clusters() == []
    finally:
        manager.close_owned()
    assert auth.encode() not in b"".join(p.read_bytes() for p in registry_path.parent.glob(registry_path.name + "*"))
