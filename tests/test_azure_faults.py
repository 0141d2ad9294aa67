"""Azure's faults on the ARM emulator: a VM whose creation fails after ARM accepted it, deletes failing until a
retry, a quota too low, a kernel killed mid-launch, and the orphan sweep (this installation's leftovers
deleted, a VM cumulo did not create left alone).

Each test checks what the user sees, what the registry says, and that nothing is left (the autouse
``no_azure_leftovers``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import dask
import pytest
from cumulo.exceptions import ProviderError, QuotaError
from cumulo.life import reaper
from cumulo.life.registry import Registry
from cumulo.providers.azure import AzureProvider
from cumulo.spec import ClusterSpec

from . import azure_support
from .azure_emulator import ArmEmulator
from .cloud_support import Started, close, kill_mid_launch, killed_launch, start, stop_from_row

arm, no_azure_leftovers = azure_support.arm, azure_support.no_azure_leftovers  # the fixtures

pytestmark = pytest.mark.timeout(180)


def _spec(**kw: Any) -> ClusterSpec:
    values: dict[str, Any] = {"provider": "azure", "gpu": "T4", "workers": 2, "region": "eastus", **kw}
    return ClusterSpec(**values)


def _launch(spec: ClusterSpec) -> Started:
    return asyncio.run(start(spec, provider=AzureProvider()))


def test_a_vm_failing_after_it_was_accepted_tears_everything_down(arm: ArmEmulator) -> None:
    arm.faults.fail_after_accept = 1  # the head's PUT is accepted (201), then its operation fails
    with pytest.raises(ProviderError, match="InternalExecutionError"):
        _launch(_spec())
    registry = Registry()
    (row,) = registry.list(include_closed=True)
    assert row.state == "failed"
    instances = [r for r in registry.resources(cluster_id=row.id) if r.kind == "instance"]
    # the failed VM was adopted by its tags (the create raised before returning its id), then deleted
    assert len(instances) == 1 and instances[0].state == "terminated"
    assert not arm.live() and not arm.cumulo_groups()


def test_delete_failing_keeps_the_row_until_a_retry_confirms(arm: ArmEmulator) -> None:
    s = _launch(_spec())
    arm.faults.delete_failures = 1000
    with dask.config.set({"cumulo.azure.retry-total": 1}), pytest.raises(ProviderError, match="InternalServerError"):
        asyncio.run(close(s))
    registry = Registry()
    assert registry.get(s.id).state == "stop-failed" and len(arm.live()) == 2 and arm.cumulo_groups()
    arm.faults.delete_failures = 0
    asyncio.run(stop_from_row(registry, s.id, AzureProvider()))
    assert registry.get(s.id).state == "closed"
    assert not arm.live() and not arm.cumulo_groups()


def test_sweep_deletes_this_installations_leftovers_and_leaves_a_vm_cumulo_did_not_create(
        arm: ArmEmulator) -> None:
    s = _launch(_spec(workers=1))
    registry = Registry()
    with registry._connect() as db:  # the row was given up for lost while its VM runs on (a crashed stop)
        db.execute("UPDATE clusters SET state = 'lost' WHERE id = ?", (s.id,))
    foreign = arm.add_foreign_vm("team-rg", "jupyter-box")
    try:
        found = asyncio.run(AzureProvider().sweep_orphans(registry, dry_run=False, terminate_unknown=True))
        ours = [o for o in found if o.ours]
        assert [(o.kind, o.action) for o in ours] == [("instance", "terminated")], found
        assert all(o.resource_id != foreign for o in found)  # no cumulo tags: not cumulo's to report or delete
        assert foreign.lower() in arm.vms
        assert not arm.cumulo_groups()  # the cluster's resource group went with it
    finally:
        arm.vms.pop(foreign.lower(), None)
        arm.groups.pop("team-rg", None)


def test_reap_where_azure_is_not_set_up_says_so_and_goes_on(arm: ArmEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from cumulo.life.reaper import sweep

    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID")
    result = sweep(Registry(), dry_run=True)
    assert "azure" in result.unchecked and not arm.calls


def test_quota_too_low_is_refused_before_anything_is_created(arm: ArmEmulator) -> None:
    arm.quotas["standardNCADSA100v4Family"] = 24  # one Standard_NC24ads_A100_v4 (24 vCPUs), not two
    with pytest.raises(QuotaError) as err:
        _launch(_spec(gpu="A100"))
    assert "needs 48 vCPUs" in str(err.value) and "24 free (limit 24, 0 in use)" in str(err.value)
    assert "Usage + quotas" in str(err.value)
    assert not Registry().list(include_closed=True)  # refused in preflight: no row
    assert not arm.groups and not arm.vms and not any(c[0] == "PUT" for c in arm.calls)


def test_a_kernel_killed_mid_launch_is_cleaned_up_by_the_reaper(arm: ArmEmulator, tmp_path: Path) -> None:
    script = killed_launch("azure", "AzureProvider", gpu="A100")
    config = azure_support.fast_config(tmp_path, arm.endpoint)
    cid = kill_mid_launch(script, config)
    registry = Registry()
    assert arm.live() and arm.cumulo_groups()  # it bills, but it is visible: an open row
    with dask.config.set({"cumulo.guards.lease-grace": "60s"}):
        registry.update(cid, heartbeat=time.time() - 120)
        done = reaper.sweep(registry).clusters
    assert [(r.name, r.action) for r in done] == [("killed", "stopped")]
    assert registry.get(cid).state == "closed"
    assert arm.wait_idle() and not arm.cumulo_groups()
