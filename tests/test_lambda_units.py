"""Pieces of the Lambda provider on their own: credentials, the HTTP client, shape choice, bootstrap, TLS,
names, the firewall source address and the per-cluster SSH key."""

from __future__ import annotations

import asyncio
import os
import pickle
import ssl
import stat
import subprocess
import time
from pathlib import Path

import dask
import distributed
import httpx
import pytest

from cumulo.providers.cloud.bootstrap import BootstrapOptions, user_data
from cumulo.security.credentials import Secret, load_secret
from cumulo.exceptions import (
    CapacityError, CredentialsError, ProviderError, QuotaError, RateLimited, SpecError,
)
from cumulo.http import ApiClient, ErrorMapping, parse_retry_after
from cumulo.providers.lambda_cloud import LAMBDA_ERRORS, InstanceType, choose_instance_type, lambda_api_key
from cumulo.providers.lambda_cloud import names, network
from cumulo.providers.cloud.sshkey import new_key_pair
from cumulo.security.tlscerts import create_cluster_tls, load_cluster_tls, remove_cluster_tls

KEY = "secret_unit_key_abcdefghijklmnop_WXYZ"


# -- credentials ----------------------------------------------------------------------------------


def test_secret_never_shows_itself() -> None:
    s = Secret(KEY, source="test")
    for text in (repr(s), str(s), f"{s}", f"{s!r}", "%s" % s):
        assert KEY not in text and "****WXYZ" in text
    assert s.reveal() == KEY
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_key_from_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", KEY)
    with dask.config.set({"cumulo.lambda.api-key-file": str(tmp_path / "missing")}):
        assert lambda_api_key().reveal() == KEY
        assert "LAMBDA_API_KEY" in lambda_api_key().source


def test_key_file_must_be_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    os.chmod(path, 0o644)
    with dask.config.set({"cumulo.lambda.api-key-file": str(path)}):
        with pytest.raises(CredentialsError, match="chmod 600") as info:
            lambda_api_key()
        assert KEY not in str(info.value)
        os.chmod(path, 0o640)
        with pytest.raises(CredentialsError, match="other users"):
            lambda_api_key()
        os.chmod(path, 0o600)
        assert lambda_api_key().reveal() == KEY


def test_no_key_anywhere_says_where_to_put_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    with pytest.raises(CredentialsError) as info:
        load_secret(what="Lambda Cloud API key", env_var="LAMBDA_API_KEY", file=tmp_path / "k",
                    keyring_service="cumulo-lambda")
    text = str(info.value)
    assert "LAMBDA_API_KEY" in text and "mode 600" in text and "keyring" in text


# -- HTTP client ----------------------------------------------------------------------------------


def _client(handler, **kwargs) -> ApiClient:  # type: ignore[no-untyped-def]
    kwargs.setdefault("backoff", 0.01)
    return ApiClient("http://api.invalid/v1", secret=Secret(KEY, source="test"), errors=LAMBDA_ERRORS,
                     transport=httpx.MockTransport(handler), **kwargs)


def _error(status: int, code: str, message: str = "m", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers)


def test_retries_5xx_on_idempotent_requests_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        return _error(502, "x") if len(calls) < 3 else httpx.Response(200, json={"data": []})

    async def go() -> object:
        async with _client(handler, max_retries=3) as api:
            return await api.request("GET", "/instances")

    assert asyncio.run(go()) == {"data": []}
    assert len(calls) == 3


def test_5xx_retries_are_bounded() -> None:
    async def go() -> None:
        async with _client(lambda r: _error(500, "global/internal-error"), max_retries=2) as api:
            await api.request("GET", "/instances")

    with pytest.raises(ProviderError, match="failed 3 times"):
        asyncio.run(go())


def test_post_is_not_repeated_after_a_5xx() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _error(500, "global/internal-error")

    async def go() -> None:
        async with _client(handler) as api:
            await api.request("POST", "/instance-operations/launch", json={})

    with pytest.raises(ProviderError, match="may or may not have been applied") as info:
        asyncio.run(go())
    assert len(calls) == 1 and info.value.maybe_applied  # type: ignore[attr-defined]


def test_429_honours_retry_after_and_ends_in_rate_limited() -> None:
    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        return _error(429, "global/too-many-requests", headers={"Retry-After": "0.2"})

    async def go() -> None:
        async with _client(handler, max_retries=2) as api:
            await api.request("POST", "/instance-operations/launch", json={})

    with pytest.raises(RateLimited) as info:
        asyncio.run(go())
    assert len(stamps) == 3, "429 means not applied: even a POST is retried"
    assert all(b - a >= 0.19 for a, b in zip(stamps, stamps[1:]))
    assert info.value.retry_after == pytest.approx(0.2)


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 5) == pytest.approx(5.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_pacing_spaces_requests() -> None:
    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        return httpx.Response(200, json={"data": {"instance_ids": []}})

    async def go() -> None:
        async with _client(handler, min_interval=0.05, intervals={"/instance-operations/launch": 0.3}) as api:
            await api.request("POST", "/instance-operations/launch", json={})
            await api.request("GET", "/instances")
            await api.request("POST", "/instance-operations/launch", json={})

    asyncio.run(go())
    assert stamps[1] - stamps[0] >= 0.045 and stamps[2] - stamps[0] >= 0.29


@pytest.mark.parametrize("status,code,cls", [
    (401, "global/invalid-api-key", CredentialsError),
    (403, "global/whatever", CredentialsError),
    (400, "global/quota-exceeded", QuotaError),
    (400, "instance-operations/launch/insufficient-capacity", CapacityError),
    (400, "instance-operations/launch/something-new", ProviderError),
    (404, "global/object-does-not-exist", ProviderError),
])
def test_error_mapping(status: int, code: str, cls: type) -> None:
    async def go() -> None:
        async with _client(lambda r: _error(status, code, f"said {KEY}")) as api:
            await api.request("GET", "/x")

    with pytest.raises(cls) as info:
        asyncio.run(go())
    assert code in str(info.value) and KEY not in str(info.value) and "****WXYZ" in str(info.value)


def test_generic_mapping_for_other_providers() -> None:
    mapping = ErrorMapping(provider="Other", codes={"quota/": QuotaError})
    assert mapping.classify(__import__("cumulo.http", fromlist=["ApiError"]).ApiError(400, "quota/gpus")) is QuotaError


def test_repr_of_client_hides_key() -> None:
    api = _client(lambda r: httpx.Response(200, json={}))
    assert KEY not in repr(api) and KEY not in repr(api._client.auth)
    asyncio.run(api.aclose())


# -- choosing a shape -------------------------------------------------------------------------------


def _types(**capacity: tuple[str, ...]) -> dict[str, InstanceType]:
    shapes = {"gpu_1x_a10": (0.75, 1), "gpu_1x_a100": (1.29, 1), "gpu_1x_a100_sxm4": (1.49, 1),
              "gpu_8x_a100_80gb_sxm4": (14.32, 8), "gpu_1x_h100_pcie": (2.49, 1)}
    return {n: InstanceType(n, n, p, 30, 200, g, capacity.get(n, ("us-east-1",))) for n, (p, g) in shapes.items()}


def test_choose_cheapest_match_with_capacity() -> None:
    t, region = choose_instance_type(_types(), gpu="A100", instance_type=None, gpus_per_instance=None, region=None)
    assert (t.name, region) == ("gpu_1x_a100", "us-east-1")
    t, _ = choose_instance_type(_types(gpu_1x_a100=()), gpu="a100", instance_type=None, gpus_per_instance=1,
                                region=None)
    assert t.name == "gpu_1x_a100_sxm4"
    t, _ = choose_instance_type(_types(), gpu="A100", instance_type=None, gpus_per_instance=8, region=None)
    assert t.name == "gpu_8x_a100_80gb_sxm4"
    t, _ = choose_instance_type(_types(), gpu="A10", instance_type=None, gpus_per_instance=None, region=None)
    assert t.name == "gpu_1x_a10", "A10 must not match A100"


def test_no_capacity_names_where_there_is_some() -> None:
    types = _types(gpu_1x_h100_pcie=("us-west-1",))
    with pytest.raises(CapacityError) as info:
        choose_instance_type(types, gpu="H100", instance_type=None, gpus_per_instance=None, region="us-east-1")
    text = str(info.value)
    assert "gpu_1x_h100_pcie has capacity in us-west-1" in text and "gpu_1x_a10" in text


def test_unknown_gpu_or_type_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="a100"):
        choose_instance_type(_types(), gpu="B300", instance_type=None, gpus_per_instance=None, region=None)
    with pytest.raises(SpecError, match="no instance type"):
        choose_instance_type(_types(), gpu=None, instance_type="gpu_9x_zzz", gpus_per_instance=None, region=None)
    with pytest.raises(SpecError, match="say which GPU"):
        choose_instance_type(_types(), gpu=None, instance_type=None, gpus_per_instance=None, region=None)


# -- bootstrap and TLS ----------------------------------------------------------------------------


def test_bootstrap_pins_versions_and_probes_gpus(tmp_path: Path) -> None:
    tls = create_cluster_tls("c0ffee", directory=tmp_path)
    head = user_data("head", cluster_id="c0ffee", tls=tls)
    worker = user_data("worker", cluster_id="c0ffee", tls=tls, scheduler_host="10.0.0.5")
    for script in (head, worker):
        assert f"dask=={dask.__version__}" in script and f"distributed=={distributed.__version__}" in script
        assert "nvidia-smi -L" in script and "will not join" in script
        assert "--protocol tls" in script or "tls://" in script
        assert tls.pem("client")[2] not in script, "the client key never leaves this machine"
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "dask cuda worker tls://10.0.0.5:8786" in worker and "dask scheduler" not in worker
    assert "dask scheduler --protocol tls --port 8786" in head
    quiet = user_data("worker", cluster_id="c0ffee", tls=tls, scheduler_host="10.0.0.5",
                      options=BootstrapOptions(gpu_probe=False, install_packages=False, worker_command="dask worker"))
    assert "GPU probe disabled by configuration" in quiet and "nvidia-smi" not in quiet
    assert "package install disabled by configuration" in quiet


def test_cluster_certificates_are_private_and_work(tmp_path: Path) -> None:
    tls = create_cluster_tls("abc123", directory=tmp_path)
    assert stat.S_IMODE(tls.directory.stat().st_mode) == 0o700
    for f in tls.directory.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert not any("ca-key" in f.name for f in tls.directory.iterdir()), "the CA key is discarded"
    sec = tls.security("client")
    assert sec.require_encryption and sec.tls_client_cert
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    ctx.load_cert_chain(tls.cert_file("client"), tls.key_file("client"))
    other = create_cluster_tls("other", directory=tmp_path)
    assert other.ca_file.read_text() != tls.ca_file.read_text()
    assert load_cluster_tls("abc123", directory=tmp_path).ca_file == tls.ca_file
    remove_cluster_tls("abc123", directory=tmp_path)
    with pytest.raises(CredentialsError, match="cumulo down"):
        load_cluster_tls("abc123", directory=tmp_path)


def test_key_from_keyring_when_importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    import types

    fake = types.ModuleType("keyring")
    fake.get_password = lambda service, user: KEY if (service, user) == ("cumulo-lambda", "default") else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    with dask.config.set({"cumulo.lambda.api-key-file": str(tmp_path / "missing")}):
        secret = lambda_api_key()
    assert secret.reveal() == KEY and secret.source == "keyring cumulo-lambda/default"


def test_dashboards_listen_on_loopback_only(tmp_path: Path) -> None:
    """Fault 11: the worker dashboard listened on all interfaces without TLS; only the TLS port may face out."""
    tls = create_cluster_tls("d45h", directory=tmp_path)
    head = user_data("head", cluster_id="d45h", tls=tls)
    worker = user_data("worker", cluster_id="d45h", tls=tls, scheduler_host="10.0.0.5")
    sched_line = next(ln for ln in head.splitlines() if "dask scheduler" in ln)
    assert '--dashboard-address "127.0.0.1:${CUMULO_DASHBOARD_PORT:-8787}"' in sched_line
    for script in (head, worker):
        line = next(ln for ln in script.splitlines() if "cuda worker tls://" in ln)
        assert "--dashboard-address 127.0.0.1:0" in line, line
        assert "0.0.0.0" not in script and "CUMULO_DASHBOARD_ADDRESS" not in script
    # and the shell really expands the scheduler's address to loopback, whatever the port variable says
    out = subprocess.run(["bash", "-c", 'CUMULO_DASHBOARD_PORT=0; echo "127.0.0.1:${CUMULO_DASHBOARD_PORT:-8787}"'],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "127.0.0.1:0"


def test_names_carry_the_installation() -> None:
    assert names.instance_name("0a1b2c3d", "feedbeef0001", "head") == "cumulo-0a1b2c3d-feedbeef0001-head"
    parsed = names.parse("cumulo-0a1b2c3d-feedbeef0001-worker-2")
    assert parsed == names.CumuloName("0a1b2c3d", "feedbeef0001", "worker-2")
    assert names.parse(names.key_name("0a1b2c3d", "feedbeef0001")) == names.CumuloName("0a1b2c3d", "feedbeef0001", "")
    assert names.parse(names.rule_name("0a1b2c3d", "c1")).role == "scheduler-tls"
    legacy = names.parse("cumulo-feedbeef0000-head")
    assert legacy is not None and legacy.installation is None and legacy.cluster_id == "feedbeef0000"
    assert names.parse("someone-elses-box") is None


@pytest.mark.parametrize("address", ["192.168.1.23", "10.1.2.3", "172.20.0.9", "100.64.12.1", "169.254.3.4", None])
def test_behind_nat_refuses_without_client_cidr(monkeypatch: pytest.MonkeyPatch, address: str | None) -> None:
    """Fault 10: a private or unknown source address is refused; the message says what to set."""
    monkeypatch.setattr(network, "outgoing_address", lambda host: address)
    with pytest.raises(SpecError, match=r"cumulo.lambda.client-cidr to '<your public IP>/32'"):
        network.client_cidr("https://cloud.lambdalabs.com/api/v1")
    with dask.config.set({"cumulo.lambda.client-cidr": "203.0.113.7/32"}):
        assert network.client_cidr("https://cloud.lambdalabs.com/api/v1") == "203.0.113.7/32"


def test_public_and_loopback_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "outgoing_address", lambda host: "203.0.113.9")
    assert network.client_cidr("https://cloud.lambdalabs.com/api/v1") == "203.0.113.9/32"
    monkeypatch.setattr(network, "outgoing_address", lambda host: "127.0.0.1")
    assert network.client_cidr("http://127.0.0.1:4567/api/v1") == "127.0.0.1/32", "the emulator's loopback"
    with pytest.raises(SpecError, match="only loopback"):
        network.client_cidr("https://cloud.lambdalabs.com/api/v1")
    with dask.config.set({"cumulo.lambda.client-cidr": "not a network"}):
        with pytest.raises(SpecError, match="not a network"):
            network.client_cidr("https://cloud.lambdalabs.com/api/v1")


def test_ssh_key_pair_is_private(tmp_path: Path) -> None:
    path, public = new_key_pair(tmp_path, comment="cumulo-0a1b2c3d-feedbeef0001")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" cumulo-0a1b2c3d-feedbeef0001")
    assert "PRIVATE" not in public
