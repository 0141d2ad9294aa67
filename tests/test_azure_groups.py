"""Azure in an existing resource group (``resource_group=``) and with a managed identity (``identity=``).

In a group the user names, cumulo creates its vnet, NSG, NICs, public IP, VMs
and disks, deletes them singly at teardown (confirmed), and never deletes the
group nor touches what it did not create there. With ``identity=`` every VM
carries the user-assigned managed identity, and nothing of the notebook's
credentials reaches the VMs. All on the ARM emulator (tests/azure_emulator.py).
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import cumulo
import dask
import pytest
from cumulo.exceptions import SpecError
from cumulo.life import reaper
from cumulo.life.registry import Registry
from cumulo.providers.azure import AzureProvider
from cumulo.spec import ClusterSpec

from . import azure_support
from .azure_emulator import API_VERSIONS, SUBSCRIPTION, ArmEmulator
from .cloud_support import kill_mid_launch, killed_launch, start

arm, no_azure_leftovers = azure_support.arm, azure_support.no_azure_leftovers  # the fixtures

pytestmark = pytest.mark.timeout(180)

GROUP = "team-rg"
IDENTITY = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/identities/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/cumulo-workers")


def _team_group(arm: ArmEmulator) -> list[str]:
    """The user's group, with an NSG and a disk of the user's in it: the ids of what cumulo must leave alone."""
    arm.add_group(GROUP, "eastus")
    return sorted([arm.add_foreign(GROUP, "Microsoft.Network/networkSecurityGroups", "team-nsg"),
                   arm.add_foreign(GROUP, "Microsoft.Compute/disks", "cumulo-notes-disk")])


def _cluster_ids(arm: ArmEmulator, cluster_id: str) -> list[str]:
    """The ids of what cluster ``cluster_id`` has in the user's group (its names carry its id)."""
    cid = cluster_id.lower()
    return [i for i in arm.in_group(GROUP) if f"-{cid}-" in i.lower() or i.lower().endswith(f"-{cid}")]


def test_clusters_share_an_existing_group_and_leave_it_as_it_was(arm: ArmEmulator) -> None:
    theirs = _team_group(arm)
    a = cumulo.connect("azure", gpu="A100", workers=2, region="eastus", name="blue", resource_group=GROUP)
    try:
        b = cumulo.connect("azure", gpu="T4", workers=1, region="eastus", name="green", resource_group=GROUP)
        try:
            assert b.client.submit(lambda x: x * 2, 21).result() == 42
            assert not arm.cumulo_groups()  # no group of cumulo's: everything is in the user's
            assert all(f"/resourceGroups/{GROUP}/" in v.id for v in arm.live())
            a_ids, b_ids = _cluster_ids(arm, a.id), _cluster_ids(arm, b.id)
            kinds = {i.split("/providers/")[1].rsplit("/", 1)[0] for i in a_ids}
            assert kinds == {"Microsoft.Network/virtualNetworks", "Microsoft.Network/networkSecurityGroups",
                             "Microsoft.Network/publicIPAddresses", "Microsoft.Network/networkInterfaces",
                             "Microsoft.Compute/virtualMachines", "Microsoft.Compute/disks"}, a_ids
            assert len(a_ids) == 2 + 1 + 3 * 2 and len(b_ids) == 2 + 1 + 3 * 1  # vnet, NSG, IP, per VM NIC+VM+disk
        finally:
            b.close()
        assert Registry().get(b.id).state == "closed"
        assert not _cluster_ids(arm, b.id)  # green's, deleted singly
        assert len(_cluster_ids(arm, a.id)) == 9  # blue's untouched, and it still computes
        assert a.client.submit(lambda: 7).result() == 7
    finally:
        a.close()
    assert Registry().get(a.id).state == "closed"
    assert GROUP.lower() in arm.groups and arm.in_group(GROUP) == theirs
    deletes = {t for m, t, _ in arm.calls if m == "DELETE"}
    assert "microsoft.network" in deletes and "resourcegroups" not in deletes  # singly; never the group
    assert {(t, v) for _, t, v in arm.calls} <= set(API_VERSIONS.items())


def test_a_missing_group_is_refused_before_anything_is_created(arm: ArmEmulator) -> None:
    with pytest.raises(SpecError) as err:
        cumulo.connect("azure", gpu="A100", workers=2, region="eastus", resource_group="no-such-rg")
    assert "'no-such-rg' does not exist" in str(err.value) and "az group create" in str(err.value)
    assert not any(m in ("PUT", "DELETE") for m, _, _ in arm.calls)
    assert not Registry().list(include_closed=True)


def test_a_group_in_another_region_is_refused(arm: ArmEmulator) -> None:
    arm.add_group("west-rg", "westus2")
    try:
        with pytest.raises(SpecError) as err:
            cumulo.connect("azure", gpu="A100", workers=2, region="eastus", resource_group="west-rg")
        assert "westus2" in str(err.value) and "region=" in str(err.value)
        assert not any(m == "PUT" for m, _, _ in arm.calls)
    finally:
        arm.groups.pop("west-rg")


def test_a_kernel_killed_mid_launch_in_an_existing_group_is_reaped(arm: ArmEmulator, tmp_path: Path) -> None:
    theirs = _team_group(arm)
    config = {**azure_support.fast_config(tmp_path, arm.endpoint), "cumulo.azure.resource-group": GROUP}
    cid = kill_mid_launch(killed_launch("azure", "AzureProvider", gpu="A100"), config)
    assert arm.live() and _cluster_ids(arm, cid)  # it bills, but it is visible: an open row
    registry = Registry()
    with dask.config.set({"cumulo.guards.lease-grace": "60s"}):  # this process has no resource-group setting
        registry.update(cid, heartbeat=time.time() - 120)
        done = reaper.sweep(registry).clusters
    assert [(r.name, r.action) for r in done] == [("killed", "stopped")]
    assert registry.get(cid).state == "closed"
    assert arm.wait_idle() and arm.in_group(GROUP) == theirs


def test_the_orphan_sweep_finds_leftovers_in_an_existing_group_by_tags(arm: ArmEmulator) -> None:
    theirs = _team_group(arm)
    spec = ClusterSpec(provider="azure", gpu="T4", workers=1, region="eastus", options={"resource_group": GROUP})
    started = asyncio.run(start(spec, provider=AzureProvider()))
    registry = Registry()
    with registry._connect() as db:  # the row was given up for lost while its VM runs on (a crashed stop)
        db.execute("UPDATE clusters SET state = 'lost' WHERE id = ?", (started.id,))
    assert _cluster_ids(arm, started.id)
    found = asyncio.run(AzureProvider().sweep_orphans(registry, dry_run=False))  # no resource-group setting
    assert [(o.kind, o.action) for o in found if o.ours] == [("instance", "terminated")], found
    assert arm.wait_idle() and arm.in_group(GROUP) == theirs


def test_vms_carry_the_identity_and_no_notebook_credentials(arm: ArmEmulator) -> None:
    cluster = cumulo.connect("azure", gpu="T4", workers=1, region="eastus", identity=IDENTITY)
    try:
        assert cluster.client.submit(lambda: 1).result() == 1
        vms = arm.live()
        assert len(vms) == 1
        for vm in vms:
            identity = vm.body["identity"]
            assert identity["type"] == "UserAssigned" and list(identity["userAssignedIdentities"]) == [IDENTITY]
            script = base64.b64decode(vm.body["properties"]["osProfile"]["customData"]).decode()
            assert arm.token not in script
            assert "AZURE_ACCESS_TOKEN" not in script and "AZURE_CLIENT_SECRET" not in script
            assert "REQUESTS_CA_BUNDLE" not in script
    finally:
        cluster.close()


@pytest.mark.parametrize("identity", [
    "cumulo-workers",
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/data/providers/Microsoft.Storage/storageAccounts/lake",
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/identities/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/",
])
def test_a_malformed_identity_is_refused_before_any_request(arm: ArmEmulator, identity: str) -> None:
    with pytest.raises(SpecError) as err:
        cumulo.connect("azure", gpu="T4", workers=1, region="eastus", identity=identity)
    assert "user-assigned managed identity" in str(err.value) and "az identity show" in str(err.value)
    assert not arm.calls and not Registry().list(include_closed=True)
