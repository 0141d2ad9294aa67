"""Azure Spot VMs on the ARM emulator: priced at the region's Spot price, falling back to regular priority when
Azure refuses them, ``spot="only"`` never falling back, the low-priority vCPU quota, and an eviction mid-pipeline.

The Spot price comes from a loopback stand-in for Azure's retail prices API
(tests/price_emulator.py, through ``cumulo.catalog.azure-url``); evictions come
through each VM's metadata service (tests/azure_metadata_emulator.py, through
``cumulo.azure.metadata-endpoint``). Each test checks what the user sees, what is
billed, and that nothing is left (the autouse ``no_azure_leftovers``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import cumulo
import dask
import dask.dataframe as dd
import pandas as pd
import pytest
from cumulo.cost import catalog
from cumulo.cost.spend import spend_of
from cumulo.exceptions import CapacityError, QuotaError, SpecError
from cumulo.life.registry import Registry
from cumulo.providers.azure import AzureProvider
from cumulo.spec import ClusterSpec

from . import azure_support
from .azure_emulator import (
    ALLOCATION_FAILED,
    API_VERSIONS,
    LOW_PRIORITY_QUOTA,
    ArmEmulator,
)
from .cloud_support import Started, close, start
from .conftest import wait_for
from .price_emulator import PriceEmulator, azure_item

arm, no_azure_leftovers = azure_support.arm, azure_support.no_azure_leftovers  # the fixtures

pytestmark = pytest.mark.timeout(240)

#: The bundled pay-as-you-go price of Standard_NC24ads_A100_v4 (eastus), and the Spot price the API publishes.
REGULAR, SPOT = 3.673, 0.9
A100 = "Standard_NC24ads_A100_v4"


@pytest.fixture
def spot_prices() -> Iterator[PriceEmulator]:
    """Azure's retail prices API on loopback, publishing the A100 size's Spot price in eastus."""
    pages = [[azure_item(A100, 3.5), azure_item(A100, SPOT, spot=True), azure_item(A100, 4.9, windows=True),
              azure_item(A100, 0.5, spot=True, region="westus2")]]
    with PriceEmulator(azure_pages=pages) as emu, dask.config.set({"cumulo.catalog.azure-url": emu.azure_url}):
        yield emu


@pytest.fixture(autouse=True)
def progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cumulo.azure")


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cumulo.azure"]


def _spec(**kw: Any) -> ClusterSpec:
    values: dict[str, Any] = {"provider": "azure", "gpu": "A100", "workers": 2, "region": "eastus", "spot": True,
                              **kw}
    return ClusterSpec(**values)


def _launch(spec: ClusterSpec) -> Started:
    return asyncio.run(start(spec, provider=AzureProvider()))


def _metas(started: Started) -> dict[str, dict[str, Any]]:
    """Each VM's recorded launch, by role."""
    return {r.meta["name"].split("-", 3)[3]: r.meta for r in Registry().resources(cluster_id=started.id)
            if r.kind == "instance"}


def test_spot_workers_are_spot_vms_billed_at_the_regions_spot_price(
        arm: ArmEmulator, spot_prices: PriceEmulator, caplog: pytest.LogCaptureFixture) -> None:
    with dask.config.set({"cumulo.azure.spot-max-price": 1.5}):
        s = _launch(_spec())
    try:
        vms = {v.body["tags"]["cumulo-role"]: v.body["properties"] for v in arm.live()}
        assert "priority" not in vms["head"]  # the head is regular unless cumulo.azure.head-spot
        assert (vms["worker-1"]["priority"], vms["worker-1"]["evictionPolicy"],
                vms["worker-1"]["billingProfile"]) == ("Spot", "Delete", {"maxPrice": 1.5})
        metas = _metas(s)
        assert (metas["head"]["market"], metas["head"]["price_per_hour"]) == ("regular", REGULAR)
        worker = metas["worker-1"]
        assert (worker["market"], worker["price_per_hour"]) == ("spot", SPOT)
        # labelled: what it is, where from, since when
        assert "Spot price of eastus" in worker["price_basis"] and spot_prices.azure_url in worker["price_basis"]
        assert "2026-11-01" in worker["price_basis"]
        assert Registry().get(s.id).rate_per_hour == pytest.approx(REGULAR + SPOT)
        offer = [line for line in _lines(caplog) if line.startswith("offer:")]
        assert len(offer) == 1 and "head regular priority, $3.673/h" in offer[0]
        assert "1 worker(s) Spot, $0.9/h" in offer[0] and "estimated $4.57/h" in offer[0]
        assert any("'Total Regional Low-priority vCPUs'" in line for line in _lines(caplog))  # the Spot quota
    finally:
        asyncio.run(close(s))


@pytest.mark.parametrize(("error", "where"), [
    (ALLOCATION_FAILED, "operation"),
    (("SkuNotAvailable", "The requested VM size Standard_NC24ads_A100_v4 is currently not available in location "
                         "'eastus' for Spot. Please try another size or deploy to a different location."), "put"),
    (("OverconstrainedAllocationRequest", "Allocation failed. VM(s) with the following constraints cannot be "
                                          "allocated, because the condition is too restrictive."), "operation"),
    (LOW_PRIORITY_QUOTA, "put"),
])
def test_spot_refused_falls_back_to_regular_priority_in_one_line_and_leaves_nothing_of_it(
        arm: ArmEmulator, spot_prices: PriceEmulator, caplog: pytest.LogCaptureFixture,
        error: tuple[str, str], where: str) -> None:
    arm.faults.spot_refused, arm.faults.spot_error, arm.faults.spot_refused_at = 1, error, where
    s = _launch(_spec())
    try:
        fallback = [line for line in _lines(caplog) if "falling back" in line]
        assert len(fallback) == 1, _lines(caplog)
        assert "regular" in fallback[0] and error[0] in fallback[0] and "$3.673/h" in fallback[0]
        vms = [v.body["properties"] for v in arm.live()]
        assert len(vms) == 2 and all("priority" not in p for p in vms)
        assert {m["market"] for m in _metas(s).values()} == {"regular"}
        assert Registry().get(s.id).rate_per_hour == pytest.approx(2 * REGULAR)  # never billed as Spot
        # the refused VM and its NIC were deleted before the regular one was asked for: two NICs, both in use
        nics = [r for r in arm.resources.values() if r["type"].endswith("networkInterfaces")]
        assert len(nics) == 2 and all("virtualMachine" in n["properties"] for n in nics)
        assert ("DELETE", "microsoft.network", "2026-03-01") in arm.calls
        assert {(t, v) for _, t, v in arm.calls} <= set(API_VERSIONS.items())  # only what the emulator knows
    finally:
        asyncio.run(close(s))


def test_a_spot_head_refused_falls_back_with_its_public_ip_made_again(
        arm: ArmEmulator, spot_prices: PriceEmulator, caplog: pytest.LogCaptureFixture) -> None:
    arm.faults.spot_refused, arm.faults.spot_refused_at = 1, "put"  # the head's Spot PUT; the worker's is granted
    with dask.config.set({"cumulo.azure.head-spot": True}):
        s = _launch(_spec())
    try:
        fallback = [line for line in _lines(caplog) if "falling back" in line]
        assert len(fallback) == 1 and "-head in eastus (AllocationFailed)" in fallback[0]
        vms = {v.body["tags"]["cumulo-role"]: v.body["properties"] for v in arm.live()}
        assert "priority" not in vms["head"] and vms["worker-1"]["priority"] == "Spot"
        pips = [r for r in arm.resources.values() if r["type"].endswith("publicIPAddresses")]
        assert len(pips) == 1 and pips[0]["properties"].get("ipAddress")  # the new one, on the new NIC
        assert Registry().get(s.id).rate_per_hour == pytest.approx(REGULAR + SPOT)
    finally:
        asyncio.run(close(s))


def test_spot_only_never_falls_back_and_leaves_nothing(arm: ArmEmulator, spot_prices: PriceEmulator,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    arm.faults.spot_refused = 1
    with pytest.raises(CapacityError) as err:
        _launch(_spec(spot="only"))
    text = str(err.value)
    assert "AllocationFailed" in text and "spot='only' never falls back" in text and "spot=True" in text
    assert not [line for line in _lines(caplog) if "falling back" in line]
    (row,) = Registry().list(include_closed=True)
    assert row.state == "failed"
    assert not arm.live() and not arm.cumulo_groups()


def test_without_the_retail_api_a_refreshed_spot_price_is_used_labelled_with_its_date(
        arm: ArmEmulator, caplog: pytest.LogCaptureFixture) -> None:
    pages = [[azure_item(A100, 3.5), azure_item(A100, 0.8, spot=True)]]
    with PriceEmulator(azure_pages=pages) as emu, dask.config.set({"cumulo.catalog.azure-url": emu.azure_url}):
        report = catalog.refresh(sources=("azure",))  # `cumulo prices --refresh`
    assert report.ok == {"azure": 1}, report.text()
    (row,) = catalog.prices(provider="azure", region="eastus", labelled=False).query(
        f"instance_type == '{A100}'").to_dict("records")
    assert (row["on_demand_per_hour"], row["spot_per_hour"]) == (3.5, 0.8)
    # the API is down now (cumulo.catalog.azure-url is a closed port): the plan takes the refreshed Spot price
    provider = AzureProvider()
    asyncio.run(provider.preflight(_spec(spot="only")))
    (offer,) = [line for line in _lines(caplog) if line.startswith("offer:")]
    assert "head regular priority, $3.5/h" in offer and "1 worker(s) Spot, $0.8/h (Spot price of eastus" in offer
    assert f"`cumulo prices --refresh` from {emu.azure_url}, as of {row['as_of']}" in offer
    assert any("could not read the Spot price" in line for line in _lines(caplog))
    assert not Registry().list(include_closed=True) and not any(c[0] == "PUT" for c in arm.calls)


def test_spot_only_without_a_spot_price_is_refused_before_anything_is_created(arm: ArmEmulator) -> None:
    # no retail prices API (cumulo.catalog.azure-url is a closed port) and no refreshed Spot price in the catalog
    with pytest.raises(SpecError) as err:
        _launch(_spec(spot="only"))
    assert "no Spot price" in str(err.value) and "spot=True" in str(err.value)
    assert "cumulo prices --refresh" in str(err.value)
    assert not Registry().list(include_closed=True) and not any(c[0] == "PUT" for c in arm.calls)


def test_a_max_price_that_is_neither_minus_one_nor_a_price_is_refused_without_a_request(arm: ArmEmulator) -> None:
    with dask.config.set({"cumulo.azure.spot-max-price": 0}), pytest.raises(SpecError) as err:
        cumulo.connect("azure", gpu="A100", workers=2, region="eastus", spot=True)
    assert "cumulo.azure.spot-max-price" in str(err.value) and "-1" in str(err.value)
    assert not arm.calls


def test_low_priority_quota_too_low_is_refused_before_anything_is_created(
        arm: ArmEmulator, spot_prices: PriceEmulator) -> None:
    arm.quotas["lowPriorityCores"] = 24  # one Spot Standard_NC24ads_A100_v4, not two
    with pytest.raises(QuotaError) as err:
        _launch(_spec(workers=3))
    text = str(err.value)
    assert "needs 48 vCPUs of 'Total Regional Low-priority vCPUs'" in text and "24 free (limit 24, 0 in use)" in text
    assert "Spot vCPUs" in text and "spot=False" in text
    assert not Registry().list(include_closed=True) and not any(c[0] == "PUT" for c in arm.calls)


def test_a_spot_worker_evicted_mid_pipeline_retires_and_stops_billing(
        arm: ArmEmulator, spot_prices: PriceEmulator, capfd: pytest.CaptureFixture[str]) -> None:
    def _slow(part: pd.DataFrame) -> pd.DataFrame:  # local: sent by value (the VMs have no tests/)
        time.sleep(0.25)
        return part.assign(y=part.x * 2)

    frame = pd.DataFrame({"x": range(40_000), "k": [i % 7 for i in range(40_000)]})
    expected = frame.assign(y=frame.x * 2).groupby("k").y.sum()
    # this test follows the VM that is not replaced; the next one sees a replacement launched
    with dask.config.set({"cumulo.cloud.notice-poll": 0.2, "cumulo.guards.interval": 0.5,
                          "cumulo.cloud.replace-taken-back": False}):
        cluster = cumulo.connect("azure", gpu="A100", workers=3, region="eastus", spot=True, name="evicted")
        try:
            client = cluster.client
            registry = Registry()
            spots = {r.resource_id: r for r in registry.resources(cluster_id=cluster.id)
                     if r.kind == "instance" and r.meta.get("market") == "spot"}
            assert len(spots) == 2
            assert registry.get(cluster.id).rate_per_hour == pytest.approx(REGULAR + 2 * SPOT)
            assert all(v.body["properties"].get("billingProfile") == {"maxPrice": -1} for v in arm.live()
                       if v.body["properties"].get("priority") == "Spot")
            held = dd.from_pandas(frame, npartitions=16).persist()
            client.wait_for_workers(3, timeout=30)
            victim = sorted(spots)[0]
            victim_name = spots[victim].meta["name"]
            victim_host = arm.vms[victim.lower()].ip
            # the pipeline runs; Azure posts a Preempt event and deletes the VM 20 s later (policy Delete)
            running = client.compute(held.map_partitions(_slow, meta={"x": "i8", "k": "i8", "y": "i8"})
                                     .groupby("k").y.sum())
            evicted_at = arm.preempt(victim, in_seconds=20)
            result = running.result(timeout=120)
            pd.testing.assert_series_equal(result.sort_index(), expected, check_names=False)

            # the worker left through retire_workers (before the eviction), and its data with it
            wait_for(lambda: all(w["host"] != victim_host
                                 for w in client.scheduler_info(n_workers=-1)["workers"].values()),
                     timeout=60, what="the evicted worker to retire")
            assert time.time() < evicted_at, "the worker was still there when Azure evicted the VM"
            assert held.x.sum().compute() == frame.x.sum()
            # the VM asked its own metadata service, by its own name
            assert (victim_name, "/metadata/scheduledevents") in arm.metadata.asked
            # the notebook's watchdog stopped the VM's billing at the eviction, once
            row = wait_for(lambda: (r := registry.get(cluster.id)).rate_changes and r, timeout=30,
                           what="the watchdog to stop the VM's billing")
            assert row.rate_per_hour == pytest.approx(REGULAR + SPOT)
            states = {r.resource_id: r.state for r in registry.resources(cluster_id=cluster.id)}
            assert states[victim] == "interrupted"
            with dask.config.set({"cumulo.cost.billing-granularity": "1s"}):
                an_hour_on = spend_of(row, None, now=row.created + 3600).amount
                assert an_hour_on == pytest.approx(REGULAR + SPOT + SPOT * (evicted_at - row.created) / 3600,
                                                   abs=0.01)
            events = [m for _, kind, m in registry.events(cluster.id) if kind == "interrupted"]
            assert len(events) == 1 and "interrupted (spot)" in events[0] and victim_name in events[0]
            assert events[0].endswith("Not replaced (cumulo.cloud.replace-taken-back is off).")
            assert "interrupted (spot)" in capfd.readouterr().err
            # Azure deleted it when its time came (eviction policy Delete); the rest of the cluster still computes
            wait_for(lambda: victim.lower() not in arm.vms, timeout=40, what="Azure to evict the VM")
            assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
        finally:
            cluster.close()
    assert Registry().get(cluster.id).state == "closed"
    assert arm.wait_idle()


def test_a_spot_vm_evicted_without_a_notice_stops_billing_when_its_worker_is_missed_and_is_replaced(
        arm: ArmEmulator, spot_prices: PriceEmulator) -> None:
    with dask.config.set({"cumulo.guards.interval": 0.5}):
        cluster = cumulo.connect("azure", gpu="A100", workers=2, region="eastus", spot=True, name="unnoticed")
        try:
            registry = Registry()
            (victim,) = [r.resource_id for r in registry.resources(cluster_id=cluster.id)
                         if r.kind == "instance" and r.meta.get("market") == "spot"]
            arm.preempt(victim, in_seconds=0, notice=False)  # the VM never saw its Preempt event
            wait_for(lambda: victim.lower() not in arm.vms, timeout=30, what="Azure to evict the VM")
            # the worker is missed; ARM no longer lists the Spot VM: the watchdog stops its billing, once, and the
            # kernel that launched the cluster launches another Spot VM in its place
            (replaced,) = wait_for(lambda: [m for _, kind, m in registry.events(cluster.id) if kind == "replaced"],
                                   timeout=90, what="the evicted VM to be replaced")
            states = {r.resource_id: r.state for r in registry.resources(cluster_id=cluster.id)
                      if r.kind == "instance"}
            assert states[victim] == "preempted"
            (new,) = [r for r in registry.resources(cluster_id=cluster.id) if r.kind == "instance"
                      and r.resource_id != victim and r.meta.get("market") == "spot"]
            assert new.resource_id in replaced and "spot" in replaced and "$0.9/h" in replaced
            assert arm.vms[new.resource_id.lower()].body["properties"]["priority"] == "Spot"
            events = [m for _, kind, m in registry.events(cluster.id) if kind == "preempted"]
            assert len(events) == 1 and "was preempted by Azure" in events[0] and "$0.9/h stops billing" in events[0]
            assert events[0].endswith("A replacement is being launched (same market, then the fallback).")
            # the bill: regular + spot, regular alone from the eviction seen, then spot again from the request
            row = registry.get(cluster.id)
            rates = [rate for _, rate in json.loads(row.rate_changes or "[]")]
            assert rates[-2:] == [pytest.approx(REGULAR), pytest.approx(REGULAR + SPOT)]
            assert len({w["host"] for w in cluster.client.scheduler_info(n_workers=-1)["workers"].values()}) == 2
            assert cluster.client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
        finally:
            cluster.close()
    assert Registry().get(cluster.id).state == "closed"
    assert arm.wait_idle()
