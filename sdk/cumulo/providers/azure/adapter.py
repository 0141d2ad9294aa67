"""Azure as the cloud layer's adapter: a resource group per cluster, its network, and one VM per instance.

How the layer's hooks map onto Azure (the layer calls them in this order):

- ``add_ssh_key``: Azure has no account-wide keys; the public key is kept for
  the VMs of this launch (``osProfile``'s authorized keys), nothing is created;
- ``open_port`` (the cluster's firewall rule): the resource group
  ``cumulo-<installation>-<cluster id>`` (tagged with the mark), its NSG
  admitting only the scheduler's TLS port and SSH from the client's network
  (Azure's default rules let the VMs of the vnet reach each other), and a vnet
  whose one subnet carries the NSG;
- ``create``: per VM a NIC (the head also a public IP) and the VM itself,
  tagged, booting the first-boot script as its customData (base64), each PUT
  waited for through the SDK's ARM poller;
- ``terminate``: the VMs are deleted (their OS disk and NIC with them,
  ``deleteOption: Delete``) and the deletes waited for;
- ``remove_rules``: the cluster's whole resource group is deleted (vnet, NSG,
  public IP and whatever a failed launch left), waited for: this is what
  leaves nothing behind.

Instances are listed over the whole subscription (``instances``), each VM's
power state read from its instance view, its addresses from the NICs and
public IPs: the orphan sweep sees VMs of other installations too (reported by
their tags, never touched unless asked).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterable
from typing import Any

from ... import config
from ...exceptions import ProviderError, SpecError
from ..cloud.adapter import ACTIVE, BOOTING, CloudAdapter, Instance, Mark, Resource
from ..cloud.plan import Plan
from .api import Azure
from .marks import INSTALLATION, RULE_SUFFIX, group_of, mark_of, name_of, tags_of
from .preflight import Offer

__all__ = ["PROVIDER", "AzureAdapter"]

PROVIDER = "azure"
#: The instances' sshd port (the image's), opened to the client alongside the scheduler's.
SSH_PORT = 22
_VNET, _SUBNET, _NSG = "vnet", "subnet", "nsg"
#: provisioningState -> the layer's status (Succeeded is refined by the power state).
_PROVISIONING = {"Creating": BOOTING, "Updating": BOOTING, "Migrating": BOOTING, "Failed": "unhealthy",
                 "Canceled": "unhealthy", "Deleting": "terminating"}
#: PowerState/<code> -> the layer's status. A stopped VM still bills; a deallocated one bills its disk.
_POWER = {"running": ACTIVE, "starting": BOOTING, "stopping": "stopping", "stopped": "stopped",
          "deallocating": "deallocating", "deallocated": "deallocated"}


def _wire(obj: Any) -> dict[str, Any]:
    """An SDK model as ARM's JSON (wire names)."""
    if obj is None:
        return {}
    return dict(obj.as_dict()) if hasattr(obj, "as_dict") else dict(obj)


def _parts(resource_id: str) -> tuple[str, str]:
    """(resource group, name) of an ARM resource id."""
    bits = resource_id.strip("/").split("/")
    lower = [b.lower() for b in bits]
    try:
        return bits[lower.index("resourcegroups") + 1], bits[-1]
    except (ValueError, IndexError):
        raise ProviderError(f"{resource_id!r} is not an Azure resource id") from None


class AzureAdapter(CloudAdapter):
    """ARM (through api.Azure) as the cloud layer drives it; see the module docstring."""

    provider = PROVIDER
    title = "Azure"

    def __init__(self, azure: Azure, *, region: str, say: Callable[[str], None] | None = None) -> None:
        self.azure = azure
        self.region = region
        self.say = say or (lambda line: None)
        self._keys: dict[str, str] = {}  # key name -> public key, for this launch's VMs
        self._marks: dict[str, Mark] = {}  # resource name -> its mark (name() comes first)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.azure.close)

    def prepare(self, plan: Plan) -> None:
        self.region = plan.region

    @property
    def api_url(self) -> str:
        return self.azure.endpoint

    def _id(self, group: str, provider: str, kind: str, name: str) -> str:
        return (f"/subscriptions/{self.azure.subscription_id}/resourceGroups/{group}/providers/{provider}/"
                f"{kind}/{name}")

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

    # -- the cluster's resource group and network (the layer's firewall rule) -------------------

    async def open_port(self, name: str, *, port: int, source: str) -> None:
        """The cluster's resource group, an NSG admitting ``port`` and SSH from ``source`` only, and a vnet
        whose subnet carries it. SSH logs in with the cluster's own key only (the Jupyter server's dashboard
        tunnel, and a user reading an instance's bootstrap log)."""
        mark = self._mark(name)
        group, tags = group_of(mark), tags_of(mark)
        self.say(f"resource group {group} in {self.region}: network, NSG")
        await self.azure.call(f"creating the resource group {group}",
                              self.azure.resources.resource_groups.create_or_update, group,
                              {"location": self.region, "tags": tags})
        rules = [
            {"name": "cumulo-scheduler-tls", "properties": {
                "description": "cumulo: the scheduler's TLS port, from the client", "protocol": "Tcp",
                "sourceAddressPrefix": source, "sourcePortRange": "*", "destinationAddressPrefix": "*",
                "destinationPortRange": str(port), "access": "Allow", "priority": 100, "direction": "Inbound"}},
            {"name": "cumulo-ssh", "properties": {
                "description": "cumulo: SSH with the cluster's key, from the client", "protocol": "Tcp",
                "sourceAddressPrefix": source, "sourcePortRange": "*", "destinationAddressPrefix": "*",
                "destinationPortRange": str(SSH_PORT), "access": "Allow", "priority": 110, "direction": "Inbound"}},
        ]
        network = self.azure.network
        nsg = await self.azure.wait(f"creating the NSG of {group}",
                                    network.network_security_groups.begin_create_or_update, group, _NSG,
                                    {"location": self.region, "tags": tags, "properties": {"securityRules": rules}})
        await self.azure.wait(f"creating the vnet of {group}", network.virtual_networks.begin_create_or_update,
                              group, _VNET, {"location": self.region, "tags": tags, "properties": {
                                  "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                                  "subnets": [{"name": _SUBNET, "properties": {
                                      "addressPrefix": "10.0.0.0/24",
                                      "networkSecurityGroup": {"id": _wire(nsg).get("id")
                                                               or self._id(group, "Microsoft.Network",
                                                                           "networkSecurityGroups", _NSG)}}}]}})

    async def rules(self) -> list[Resource]:
        """cumulo's resource groups (tagged), each as the firewall rule of its cluster."""
        groups = await self.azure.call("listing resource groups",
                                       lambda: list(self.azure.resources.resource_groups.list(
                                           filter=f"tagName eq '{INSTALLATION}'")))
        out = []
        for g in map(_wire, groups):
            tags = tuple(sorted((str(k), str(v)) for k, v in (g.get("tags") or {}).items()))
            mark = mark_of(tags)
            if mark is None:
                continue
            rule = name_of(Mark(mark.installation, mark.cluster_id, RULE_SUFFIX[1:]))
            out.append(Resource(rule, rule, f"resource group {g.get('name')} in {g.get('location')} (network, "
                                "NSG, public IP, disks)", tags))
        return out

    async def remove_rules(self, names: Iterable[str]) -> int:
        """Delete the resource groups of these rules (everything left in them), waiting for ARM to confirm."""
        groups = sorted({n.removesuffix(RULE_SUFFIX) for n in names if n.endswith(RULE_SUFFIX)})
        removed = 0
        for group in groups:
            if not await self.azure.call(f"reading the resource group {group}",
                                         self.azure.resources.resource_groups.check_existence, group):
                continue
            self.say(f"deleting the resource group {group} (network, NSG, public IP, disks)")
            await self.azure.wait(f"deleting the resource group {group}",
                                  self.azure.resources.resource_groups.begin_delete, group)
            removed += 1
        return removed

    # -- the SSH key: kept for this launch's VMs ---------------------------------------------------

    async def add_ssh_key(self, name: str, public_key: str) -> str | None:
        self._keys[name] = public_key.strip()
        return None

    async def ssh_keys(self) -> list[Resource]:
        return []  # none at the account: each VM carries its cluster's public key

    async def remove_ssh_keys(self, names: Iterable[str]) -> int:
        for name in names:
            self._keys.pop(name, None)
        return 0

    # -- instances -----------------------------------------------------------------------------

    async def create(self, mark: Mark, *, plan: Plan, ssh_key: str, user_data: str, count: int = 1) -> list[str]:
        """A NIC (and on the head a public IP), then the VM, each PUT waited for through ARM's poller."""
        if count != 1:
            raise ProviderError("the Azure adapter launches one VM per request")
        if ssh_key not in self._keys:
            raise SpecError("Azure VMs take the cluster's SSH public key at creation: a key of your own "
                            "(an Azure SSH key resource) is not supported yet")
        offer: Offer = plan.shape
        group, vm = group_of(mark), self.name(mark)
        tags = tags_of(mark)
        network = self.azure.network
        ip_config: dict[str, Any] = {"subnet": {"id": self._id(group, "Microsoft.Network", "virtualNetworks",
                                                                f"{_VNET}/subnets/{_SUBNET}")},
                                     "privateIPAllocationMethod": "Dynamic"}
        if mark.role == "head":
            pip = await self.azure.wait(f"creating the public IP of {vm}",
                                        network.public_ip_addresses.begin_create_or_update, group, f"{vm}-ip",
                                        {"location": self.region, "tags": tags, "sku": {"name": "Standard"},
                                         "properties": {"publicIPAllocationMethod": "Static"}})
            ip_config["publicIPAddress"] = {"id": _wire(pip).get("id")}
        nic = await self.azure.wait(f"creating the NIC of {vm}", network.network_interfaces.begin_create_or_update,
                                    group, f"{vm}-nic", {"location": self.region, "tags": tags, "properties": {
                                        "ipConfigurations": [{"name": "ipconfig", "properties": ip_config}]}})
        user = str(config.get("cloud.ssh-user"))
        body = {"location": self.region, "tags": tags, "properties": {
            "hardwareProfile": {"vmSize": plan.instance_type},
            "storageProfile": {"imageReference": offer.image, "osDisk": {
                "name": f"{vm}-disk", "createOption": "FromImage", "deleteOption": "Delete",
                "managedDisk": {"storageAccountType": "Premium_LRS"}}},
            "osProfile": {"computerName": vm[:64], "adminUsername": user,
                          "customData": base64.b64encode(user_data.encode()).decode(),
                          "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                              {"path": f"/home/{user}/.ssh/authorized_keys", "keyData": self._keys[ssh_key]}]}}},
            "networkProfile": {"networkInterfaces": [{"id": _wire(nic).get("id"),
                                                      "properties": {"primary": True, "deleteOption": "Delete"}}]},
        }}
        vm_id = self._id(group, "Microsoft.Compute", "virtualMachines", vm)
        self.say(f"asking for {plan.instance_type} as {vm}")
        try:
            made = await self.azure.wait(f"creating the VM {vm}",
                                         self.azure.compute.virtual_machines.begin_create_or_update, group, vm, body)
        except ProviderError as exc:
            # the PUT may have been accepted before the operation failed: the layer adopts what carries the mark
            exc.maybe_applied = True  # type: ignore[attr-defined]
            raise
        return [str(_wire(made).get("id") or vm_id)]

    async def _addresses(self) -> dict[str, tuple[str | None, str | None]]:
        """VM id (lower case) -> (public IP, private IP), from the subscription's NICs and public IPs."""
        network = self.azure.network
        nics = await self.azure.call("listing network interfaces", lambda: list(network.network_interfaces.list_all()))
        pips = await self.azure.call("listing public IPs", lambda: list(network.public_ip_addresses.list_all()))
        public = {str(p.get("id", "")).lower(): p.get("properties", {}).get("ipAddress") for p in map(_wire, pips)}
        out: dict[str, tuple[str | None, str | None]] = {}
        for nic in map(_wire, nics):
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
        group, name = _parts(str(data["id"]))
        view = await self.azure.get_or_none(f"reading the instance view of {name}",
                                            self.azure.compute.virtual_machines.instance_view, group, name)
        if view is None:  # deleted since it was listed
            return "terminated"
        for status in _wire(view).get("statuses", []):
            code = str(status.get("code", ""))
            if code.startswith("PowerState/"):
                return _POWER.get(code.split("/", 1)[1], code.split("/", 1)[1])
        return BOOTING  # provisioned, no power state yet

    def _instance(self, data: dict[str, Any], status: str, ips: tuple[str | None, str | None]) -> Instance:
        tags = tuple(sorted((str(k), str(v)) for k, v in (data.get("tags") or {}).items()))
        return Instance(id=str(data["id"]), name=str(data.get("name", "")), status=status, ip=ips[0] or ips[1],
                        private_ip=ips[1], instance_type=data.get("properties", {}).get("hardwareProfile", {}).get(
                            "vmSize"), region=data.get("location"), labels=tags)

    async def instances(self) -> list[Instance]:
        vms = await self.azure.call("listing virtual machines",
                                    lambda: list(self.azure.compute.virtual_machines.list_all()))
        found = [_wire(v) for v in vms]
        if not found:
            return []
        ips = await self._addresses()
        statuses = await asyncio.gather(*(self._status(v) for v in found))
        return [self._instance(v, s, ips.get(str(v["id"]).lower(), (None, None)))
                for v, s in zip(found, statuses, strict=True)]

    async def instance(self, instance_id: str) -> Instance | None:
        group, name = _parts(instance_id)
        vm = await self.azure.get_or_none(f"reading the VM {name}", self.azure.compute.virtual_machines.get,
                                          group, name)
        if vm is None:
            return None
        data = _wire(vm)
        ips = (await self._addresses()).get(str(data["id"]).lower(), (None, None))
        return self._instance(data, await self._status(data), ips)

    async def terminate(self, instance_ids: list[str]) -> None:
        """Delete the VMs (OS disk and NIC with them), waiting for ARM to confirm each delete."""

        async def delete(iid: str) -> None:
            group, name = _parts(iid)
            await self.azure.wait(f"deleting the VM {name}", self.azure.compute.virtual_machines.begin_delete,
                                  group, name)

        await asyncio.gather(*(delete(i) for i in instance_ids))
