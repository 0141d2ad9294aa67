"""Azure end to end on the ARM emulator: connect, a real dask computation, close, nothing left; and the refusals.

The VMs are real local processes (tests/azure_emulator.py); the provider
reaches the emulator only through cumulo.azure.arm-endpoint, over TLS.
"""

from __future__ import annotations

import time

import cumulo
import pytest
from cumulo.exceptions import CredentialsError, SpecError
from cumulo.life.registry import Registry

from . import azure_support
from .azure_emulator import API_VERSIONS, ArmEmulator

arm, no_azure_leftovers = azure_support.arm, azure_support.no_azure_leftovers  # the fixtures

pytestmark = pytest.mark.timeout(180)


def test_cluster_computes_and_leaves_nothing(arm: ArmEmulator) -> None:
    cluster = cumulo.connect("azure", gpu="A100", workers=2, region="eastus", name="blue")
    try:
        client = cluster.client
        assert client.submit(lambda x: x + 1, 41).result() == 42
        assert len(client.scheduler_info()["workers"]) == 2
        vms = {v.body["tags"]["cumulo-role"]: v for v in arm.live()}
        assert set(vms) == {"head", "worker-1"}
        for vm in vms.values():
            props = vm.body["properties"]
            assert props["hardwareProfile"]["vmSize"] == "Standard_NC24ads_A100_v4"
            assert props["storageProfile"]["imageReference"]["offer"] == "ubuntu-hpc"
            assert props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
        (group,) = arm.cumulo_groups()
        assert all(f"/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/" in v.id
                   for v in vms.values())
        # the NSG admits the scheduler's TLS port and SSH from this machine only
        (nsg,) = [r for r in arm.resources.values() if r["type"].endswith("networkSecurityGroups")]
        rules = {(r["properties"]["destinationPortRange"], r["properties"]["sourceAddressPrefix"])
                 for r in nsg["properties"]["securityRules"]}
        assert rules == {("8786", "127.0.0.1/32"), ("22", "127.0.0.1/32")}
        # a public IP on the head only
        pips = [r for r in arm.resources.values() if r["type"].endswith("publicIPAddresses")]
        assert len(pips) == 1 and pips[0]["name"].endswith("-head-ip")
        row = Registry().get(cluster.id)
        assert row.rate_per_hour == pytest.approx(2 * 3.673)
    finally:
        cluster.close()
    assert Registry().get(cluster.id).state == "closed"
    assert arm.wait_idle()
    # every call the SDK made was to a route and api-version the emulator knows
    assert {(t, v) for _, t, v in arm.calls} <= set(API_VERSIONS.items())


def test_wrong_token_is_a_fast_credentials_error_without_the_token(arm: ArmEmulator,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "wrong-token-" + "x" * 24
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", wrong)
    started = time.monotonic()
    with pytest.raises(CredentialsError) as err:
        cumulo.connect("azure", gpu="A100", workers=2, region="eastus")
    assert time.monotonic() - started < 10
    assert wrong not in str(err.value) and arm.token not in str(err.value)
    assert "AZURE_ACCESS_TOKEN" in str(err.value) or "az login" in str(err.value)
    assert not Registry().list(include_closed=True)


def test_a_429_burst_is_ridden_out(arm: ArmEmulator) -> None:
    arm.faults.throttle = 3
    arm.faults.retry_after = 1
    cluster = cumulo.connect("azure", gpu="T4", workers=1, region="eastus")
    try:
        assert cluster.client.submit(lambda: 7).result() == 7
    finally:
        cluster.close()
    assert arm.faults.throttle == 0  # all three 429s were answered, and the SDK's retries rode them out


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"gpu": "B300"}, ["T4", "A10", "A100", "H100"]),
    ({"gpu": "A100", "region": "eastuss"}, ["eastus"]),
])
def test_unknown_gpu_or_region_is_a_spec_error_naming_what_to_pass(
        arm: ArmEmulator, kwargs: dict[str, object], names: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        cumulo.connect("azure", workers=2, **{"region": "eastus", **kwargs})
    for name in names:
        assert name in str(err.value)
    assert not arm.calls  # refused before any request
