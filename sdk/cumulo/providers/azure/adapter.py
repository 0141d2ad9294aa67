"""Azure as the cloud layer's adapter: a resource group per cluster, its network, and one VM per instance.

How the layer's hooks map onto Azure (the layer calls them in this order):

- ``add_ssh_key``: Azure has no account-wide keys; the public key is kept for
  the VMs of this launch (``osProfile``'s authorized keys), nothing is created;
- ``open_port`` (the cluster's firewall rule, network.py): the resource group
  ``cumulo-<installation>-<cluster id>`` (tagged with the mark), its NSG
  admitting only the scheduler's TLS port and SSH from the client's network
  (Azure's default rules let the VMs of the vnet reach each other), and a vnet
  whose one subnet carries the NSG;
- ``create``: per VM a NIC (the head also a public IP) and the VM itself,
  tagged, booting the first-boot script as its customData (base64), each PUT
  waited for through the SDK's ARM poller; the plan's attempts in order
  (cloud/market.py): a Spot VM (priority Spot, eviction policy Delete,
  ``billingProfile.maxPrice`` from ``cumulo.azure.spot-max-price``) that ARM
  refuses for capacity or low-priority quota is deleted with its NIC and
  public IP, and the VM is asked for again at regular priority, in one line
  that says so (never with ``spot="only"``);
- ``terminate``: the VMs are deleted (their OS disk and NIC with them,
  ``deleteOption: Delete``) and the deletes waited for;
- ``remove_rules``: the cluster's whole resource group is deleted (vnet, NSG,
  public IP and whatever a failed launch left), waited for: this is what
  leaves nothing behind.

In an existing resource group (``resource_group=`` or ``cumulo.azure.resource-group``,
checked in preflight) no group is created or deleted: the cluster's vnet and
NSG are named after it (``cumulo-<installation>-<cluster id>-vnet``, ``-nsg``),
so several clusters share one group, and ``remove_rules`` deletes singly, each
delete waited for and the group listed again to confirm, what carries the
cluster's tags (NICs, public IPs, the vnet, the NSG) and the OS disks named
after its VMs. It finds them over the whole subscription by tags alone, so
``cumulo down`` and the reaper need no setting; whatever else is in the group
is never touched.

With ``identity=`` (``cumulo.azure.identity``) every VM carries that user-assigned
managed identity (``identity.userAssignedIdentities``): workers read Blob/ADLS
data as it, and nothing of the notebook's credentials is in their customData.

Spot evictions: every VM's first-boot script runs the shared watcher
(cloud/notice_watch.py) with notice.py, which reads the VM's Scheduled Events at
``cumulo.azure.metadata-endpoint`` and reports a Preempt event for the VM by its
name; the kernel's watchdog then stops that VM's billing (life/interruptions.py).

Instances are listed over the whole subscription (``instances``), each VM's
power state read from its instance view, its addresses from the NICs and
public IPs: the orphan sweep sees VMs of other installations too (reported by
their tags, never touched unless asked).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ... import config
from ...exceptions import CapacityError, ProviderError, QuotaError, SpecError
from ..cloud.adapter import ACTIVE, BOOTING, CloudAdapter, Instance, Mark, Resource
from ..cloud.market import Attempt
from ..cloud.plan import Plan
from .api import Azure
from .marks import mark_of, name_of, tags_of
from .network import NetworkMixin, resource_parts, wire
from .preflight import Offer, describe

__all__ = ["PROVIDER", "AzureAdapter", "notice_source", "spot_refusal"]

PROVIDER = "azure"
#: provisioningState -> the layer's status (Succeeded is refined by the power state).
_PROVISIONING = {"Creating": BOOTING, "Updating": BOOTING, "Migrating": BOOTING, "Failed": "unhealthy",
                 "Canceled": "unhealthy", "Deleting": "terminating"}
#: PowerState/<code> -> the layer's status. A stopped VM still bills; a deallocated one bills its disk.
_POWER = {"running": ACTIVE, "starting": BOOTING, "stopping": "stopping", "stopped": "stopped",
          "deallocating": "deallocating", "deallocated": "deallocated"}


#: The Scheduled Events reader run on each VM (standard library only), before the shared watcher.
_NOTICE = (Path(__file__).parent / "notice.py").read_text()


def notice_source(endpoint: str) -> str:
    """notice.py as the VMs run it: reading Scheduled Events at ``endpoint`` (``cumulo.azure.metadata-endpoint``,
    which the VMs cannot read: they have no cumulo configuration)."""
    return _NOTICE.replace('ENDPOINT = "http://169.254.169.254"', f"ENDPOINT = {endpoint.rstrip('/')!r}", 1)


def spot_refusal(exc: BaseException) -> bool:
    """Whether ARM refused a Spot VM for want of Spot capacity (AllocationFailed, ZonalAllocationFailed,
    SkuNotAvailable, OverconstrainedAllocationRequest, ...) or of low-priority vCPU quota: regular priority may
    still be granted. Any other refusal is not the Spot market's and is raised as it is."""
    if isinstance(exc, CapacityError):
        return True
    return isinstance(exc, QuotaError) and "lowprioritycores" in str(exc).lower().replace("-", "").replace(" ", "")


class AzureAdapter(NetworkMixin, CloudAdapter):
    """ARM (through api.Azure) as the cloud layer drives it; see the module docstring."""

    provider = PROVIDER
    title = "Azure"

    def __init__(self, azure: Azure, *, region: str, say: Callable[[str], None] | None = None) -> None:
        self.azure = azure
        self.region = region
        self.say = say or (lambda line: None)
        self._keys: dict[str, str] = {}  # key name -> public key, for this launch's VMs
        self._launched: dict[str, Attempt] = {}  # VM id (lower case) -> the attempt that created it
        #: Spot evictions: each VM's watcher reads Scheduled Events (notice.py) at the configured endpoint.
        self.notice = notice_source(str(config.get("azure.metadata-endpoint")))  # type: ignore[misc]
        self._marks: dict[str, Mark] = {}  # resource name -> its mark (name() comes first)
        #: An existing resource group to launch in (the plan's), or None: a group per cluster.
        self.resource_group: str | None = None
        #: The user-assigned managed identity the VMs carry (the plan's), or None.
        self.identity: str | None = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.azure.close)

    def prepare(self, plan: Plan) -> None:
        self.region = plan.region
        offer = plan.shape
        self.resource_group = getattr(offer, "resource_group", None)
        self.identity = getattr(offer, "identity", None)

    @property
    def api_url(self) -> str:
        return self.azure.endpoint

    # -- marks: tags -------------------------------------------------------------------------

    def name(self, mark: Mark) -> str:
        name = name_of(mark)
        self._marks[name] = mark
        return name

    def owner(self, item: Instance | Resource) -> Mark | None:
        return mark_of(item.labels)

    def _mark(self, name: str) -> Mark:
        if name not in self._marks:
            raise ProviderError(f"cumulo has no mark for {name}: the layer names a resource before creating it")
        return self._marks[name]

    # -- the SSH key: kept for this launch's VMs ---------------------------------------------------

    async def add_ssh_key(self, name: str, public_key: str) -> str | None:
        self.knows_ssh_key(name, public_key)
        return None

    def knows_ssh_key(self, name: str, public_key: str) -> None:
        self._keys[name] = public_key.strip()

    async def ssh_keys(self) -> list[Resource]:
        return []  # none at the account: each VM carries its cluster's public key

    async def remove_ssh_keys(self, names: Iterable[str]) -> int:
        for name in names:
            self._keys.pop(name, None)
        return 0

    # -- instances -----------------------------------------------------------------------------

    async def create(self, mark: Mark, *, plan: Plan, ssh_key: str, user_data: str, count: int = 1) -> list[str]:
        """The plan's attempts in order (Spot, then regular priority unless ``spot="only"``): for each a NIC (and
        on the head a public IP), then the VM, each PUT waited for through ARM's poller. A Spot VM that Azure
        refuses (no capacity, SKU not available, the low-priority vCPU quota) is deleted with its NIC and
        public IP, so nothing of it bills, and the next attempt goes on, saying so in one line."""
        if count != 1:
            raise ProviderError("the Azure adapter launches one VM per request")
        if ssh_key not in self._keys:
            raise SpecError("Azure VMs take the cluster's SSH public key at creation: a key of your own "
                            "(an Azure SSH key resource) is not supported yet")
        offer: Offer = plan.shape
        group, vm = self._group(mark), self.name(mark)
        tries = offer.head if mark.role == "head" else offer.workers
        refused: list[str] = []
        for n, attempt in enumerate(tries):
            if refused and attempt.market == "on-demand" and tries[n - 1].market == "spot":
                self.say(f"Azure refused a Spot {plan.instance_type} for {vm} in {attempt.zone} ({refused[-1]}): "
                         f"falling back to regular priority ({describe(attempt)})")
            else:
                self.say(f"asking for {plan.instance_type} as {vm}: {describe(attempt)}")
            try:
                vm_id = await self._create_vm(mark, plan, ssh_key, user_data, attempt)
            except ProviderError as exc:
                if attempt.market != "spot" or not spot_refusal(exc):
                    raise
                code = str(getattr(exc, "code", "") or "refused")
                refused.append(f"{code}: the low-priority vCPU quota" if isinstance(exc, QuotaError) else code)
                await self._discard(group, vm)
                continue
            self._launched[vm_id.lower()] = attempt
            return [vm_id]
        raise CapacityError(
            f"Azure refused a Spot {plan.instance_type} in {plan.region} ({'; '.join(refused) or 'no Spot price'}) "
            "and spot='only' never falls back; nothing of it was left running. Pass spot=True to fall back to "
            "regular priority, try another region (region=) or GPU type, or later")

    async def _create_vm(self, mark: Mark, plan: Plan, ssh_key: str, user_data: str, attempt: Attempt) -> str:
        """One attempt: the head's public IP, the NIC, then the VM at the attempt's priority; its id."""
        offer: Offer = plan.shape
        group, vm = self._group(mark), self.name(mark)
        tags = tags_of(mark)
        vnet, subnet, _ = self._network_names(mark)
        network = self.azure.network
        ip_config: dict[str, Any] = {"subnet": {"id": self._id(group, "Microsoft.Network", "virtualNetworks",
                                                                f"{vnet}/subnets/{subnet}")},
                                     "privateIPAllocationMethod": "Dynamic"}
        if mark.role == "head":
            pip = await self.azure.wait(f"creating the public IP of {vm}",
                                        network.public_ip_addresses.begin_create_or_update, group, f"{vm}-ip",
                                        {"location": self.region, "tags": tags, "sku": {"name": "Standard"},
                                         "properties": {"publicIPAllocationMethod": "Static"}})
            ip_config["publicIPAddress"] = {"id": wire(pip).get("id")}
        nic = await self.azure.wait(f"creating the NIC of {vm}", network.network_interfaces.begin_create_or_update,
                                    group, f"{vm}-nic", {"location": self.region, "tags": tags, "properties": {
                                        "ipConfigurations": [{"name": "ipconfig", "properties": ip_config}]}})
        user = str(config.get("cloud.ssh-user"))
        body: dict[str, Any] = {"location": self.region, "tags": tags, "properties": {
            "hardwareProfile": {"vmSize": plan.instance_type},
            "storageProfile": {"imageReference": offer.image, "osDisk": {
                "name": f"{vm}-disk", "createOption": "FromImage", "deleteOption": "Delete",
                "managedDisk": {"storageAccountType": "Premium_LRS"}}},
            "osProfile": {"computerName": vm[:64], "adminUsername": user,
                          "customData": base64.b64encode(user_data.encode()).decode(),
                          "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                              {"path": f"/home/{user}/.ssh/authorized_keys", "keyData": self._keys[ssh_key]}]}}},
            "networkProfile": {"networkInterfaces": [{"id": wire(nic).get("id"),
                                                      "properties": {"primary": True, "deleteOption": "Delete"}}]},
        }}
        if self.identity:  # workers read data as this identity (IMDS tokens), never with the notebook's keys
            body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {self.identity: {}}}
        if attempt.market == "spot":
            # evicted VMs are deleted (with their disk and NIC): an evicted Spot VM never bills on
            body["properties"].update({"priority": "Spot", "evictionPolicy": "Delete",
                                       "billingProfile": {"maxPrice": offer.max_price}})
        vm_id = self._id(group, "Microsoft.Compute", "virtualMachines", vm)
        try:
            made = await self.azure.wait(f"creating the VM {vm}",
                                         self.azure.compute.virtual_machines.begin_create_or_update, group, vm, body)
        except ProviderError as exc:
            # the PUT may have been accepted before the operation failed: the layer adopts what carries the mark
            exc.maybe_applied = True  # type: ignore[attr-defined]
            raise
        return str(wire(made).get("id") or vm_id)

    async def _discard(self, group: str, vm: str) -> None:
        """Delete a refused VM, then its NIC and public IP (each waited for; a missing one is no error), so that
        nothing of a refused attempt is left to bill or to block the next attempt's names."""
        network = self.azure.network
        await self.azure.wait(f"deleting the refused VM {vm}", self.azure.compute.virtual_machines.begin_delete,
                              group, vm)
        await self.azure.wait(f"deleting the NIC of the refused VM {vm}", network.network_interfaces.begin_delete,
                              group, f"{vm}-nic")
        await self.azure.wait(f"deleting the public IP of the refused VM {vm}",
                              network.public_ip_addresses.begin_delete, group, f"{vm}-ip")
        self.say(f"deleted the refused VM {vm} and its NIC: nothing of it bills")

    def launch_meta(self, instance_id: str) -> dict[str, Any]:
        attempt = self._launched.get(instance_id.lower())
        if attempt is None:
            return {}
        return {"market": "spot" if attempt.market == "spot" else "regular", "price_per_hour": attempt.price,
                "price_basis": attempt.basis}

    async def _addresses(self) -> dict[str, tuple[str | None, str | None]]:
        """VM id (lower case) -> (public IP, private IP), from the subscription's NICs and public IPs."""
        network = self.azure.network
        nics = await self.azure.call("listing network interfaces", lambda: list(network.network_interfaces.list_all()))
        pips = await self.azure.call("listing public IPs", lambda: list(network.public_ip_addresses.list_all()))
        public = {str(p.get("id", "")).lower(): p.get("properties", {}).get("ipAddress") for p in map(wire, pips)}
        out: dict[str, tuple[str | None, str | None]] = {}
        for nic in map(wire, nics):
            props = nic.get("properties", {})
            vm = str((props.get("virtualMachine") or {}).get("id", "")).lower()
            if not vm:
                continue
            for conf in props.get("ipConfigurations", []):
                cprops = conf.get("properties", {})
                pip = str((cprops.get("publicIPAddress") or {}).get("id", "")).lower()
                out[vm] = (public.get(pip) if pip else None, cprops.get("privateIPAddress"))
                break
        return out

    async def _status(self, data: dict[str, Any]) -> str:
        """The layer's status of a listed VM: its provisioning state, refined by the power state of its
        instance view (read for cumulo's VMs only: the others' status is not cumulo's business)."""
        state = str(data.get("properties", {}).get("provisioningState", ""))
        if state in _PROVISIONING:
            return _PROVISIONING[state]
        if mark_of((data.get("tags") or {}).items()) is None:
            return ACTIVE if state == "Succeeded" else state.lower() or BOOTING
        group, name = resource_parts(str(data["id"]))
        view = await self.azure.get_or_none(f"reading the instance view of {name}",
                                            self.azure.compute.virtual_machines.instance_view, group, name)
        if view is None:  # deleted since it was listed
            return "terminated"
        for status in wire(view).get("statuses", []):
            code = str(status.get("code", ""))
            if code.startswith("PowerState/"):
                return _POWER.get(code.split("/", 1)[1], code.split("/", 1)[1])
        return BOOTING  # provisioned, no power state yet

    def _instance(self, data: dict[str, Any], status: str, ips: tuple[str | None, str | None]) -> Instance:
        tags = tuple(sorted((str(k), str(v)) for k, v in (data.get("tags") or {}).items()))
        attempt = self._launched.get(str(data["id"]).lower())
        return Instance(id=str(data["id"]), name=str(data.get("name", "")), status=status, ip=ips[0] or ips[1],
                        private_ip=ips[1], instance_type=data.get("properties", {}).get("hardwareProfile", {}).get(
                            "vmSize"), region=data.get("location"), price_per_hour=attempt.price if attempt else None,
                        labels=tags)

    async def instances(self) -> list[Instance]:
        vms = await self.azure.call("listing virtual machines",
                                    lambda: list(self.azure.compute.virtual_machines.list_all()))
        found = [wire(v) for v in vms]
        if not found:
            return []
        ips = await self._addresses()
        statuses = await asyncio.gather(*(self._status(v) for v in found))
        return [self._instance(v, s, ips.get(str(v["id"]).lower(), (None, None)))
                for v, s in zip(found, statuses, strict=True)]

    async def instance(self, instance_id: str) -> Instance | None:
        group, name = resource_parts(instance_id)
        vm = await self.azure.get_or_none(f"reading the VM {name}", self.azure.compute.virtual_machines.get,
                                          group, name)
        if vm is None:
            return None
        data = wire(vm)
        ips = (await self._addresses()).get(str(data["id"]).lower(), (None, None))
        return self._instance(data, await self._status(data), ips)

    async def terminate(self, instance_ids: list[str]) -> None:
        """Delete the VMs (OS disk and NIC with them), waiting for ARM to confirm each delete."""

        async def delete(iid: str) -> None:
            group, name = resource_parts(iid)
            await self.azure.wait(f"deleting the VM {name}", self.azure.compute.virtual_machines.begin_delete,
                                  group, name)

        await asyncio.gather(*(delete(i) for i in instance_ids))
