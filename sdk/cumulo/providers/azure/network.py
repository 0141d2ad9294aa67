"""The cluster's network as the cloud layer's firewall rule: its resource group (or, in an existing group, its own
vnet and NSG there), and removing it all at teardown.

A mixin of :class:`~.adapter.AzureAdapter` (see its docstring for how the layer's
hooks map onto Azure): ``open_port`` makes the group, the NSG admitting only the
scheduler's TLS port and SSH from the client, and the vnet whose subnet carries
the NSG; ``rules`` lists cumulo's groups (and its NSGs in groups it does not own)
as the clusters' rules; ``remove_rules`` deletes a cluster's group, or, in an
existing group, deletes singly what carries the cluster's tags and the OS disks
named after its VMs, each delete waited for, and lists again to confirm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...exceptions import ProviderError
from ..cloud.adapter import Mark, Resource
from .marks import INSTALLATION, RULE_SUFFIX, group_of, mark_of, name_of, tags_of

if TYPE_CHECKING:
    from .api import Azure

__all__ = ["NetworkMixin", "SSH_PORT", "resource_parts", "wire"]

#: The instances' sshd port (the image's), opened to the client alongside the scheduler's.
SSH_PORT = 22
_VNET, _SUBNET, _NSG = "vnet", "subnet", "nsg"


def wire(obj: Any) -> dict[str, Any]:
    """An SDK model as ARM's JSON (wire names)."""
    if obj is None:
        return {}
    return dict(obj.as_dict()) if hasattr(obj, "as_dict") else dict(obj)


def resource_parts(resource_id: str) -> tuple[str, str]:
    """(resource group, name) of an ARM resource id."""
    bits = resource_id.strip("/").split("/")
    lower = [b.lower() for b in bits]
    try:
        return bits[lower.index("resourcegroups") + 1], bits[-1]
    except (ValueError, IndexError):
        raise ProviderError(f"{resource_id!r} is not an Azure resource id") from None


class NetworkMixin:
    """The resource group and network part of the Azure adapter (see the module docstring)."""

    azure: Azure
    region: str
    resource_group: str | None
    say: Callable[[str], None]

    def _mark(self, name: str) -> Mark:
        raise NotImplementedError  # the adapter's: the mark it gave ``name``

    def _group(self, mark: Mark) -> str:
        """The resource group the mark's cluster lives in: the existing one named, else its own."""
        return self.resource_group or group_of(mark)

    def _id(self, group: str, provider: str, kind: str, name: str) -> str:
        return (f"/subscriptions/{self.azure.subscription_id}/resourceGroups/{group}/providers/{provider}/"
                f"{kind}/{name}")

    def _network_names(self, mark: Mark) -> tuple[str, str, str]:
        """(vnet, subnet, NSG) of the mark's cluster: fixed names in a group of its own, named after the cluster in
        an existing group (which other clusters may share)."""
        if self.resource_group is None:
            return _VNET, _SUBNET, _NSG
        prefix = group_of(mark)
        return f"{prefix}-{_VNET}", _SUBNET, f"{prefix}-{_NSG}"

    # -- the cluster's resource group and network (the layer's firewall rule) -------------------

    async def open_port(self, name: str, *, port: int, source: str) -> None:
        """The cluster's resource group, an NSG admitting ``port`` and SSH from ``source`` only, and a vnet
        whose subnet carries it. SSH logs in with the cluster's own key only (the Jupyter server's dashboard
        tunnel, and a user reading an instance's bootstrap log)."""
        mark = self._mark(name)
        group, tags = self._group(mark), tags_of(mark)
        vnet, subnet, nsg_name = self._network_names(mark)
        if self.resource_group is None:
            self.say(f"resource group {group} in {self.region}: network, NSG")
            await self.azure.call(f"creating the resource group {group}",
                                  self.azure.resources.resource_groups.create_or_update, group,
                                  {"location": self.region, "tags": tags})
        else:  # the user's group: never created, tagged or deleted by cumulo
            self.say(f"in the existing resource group {group} ({self.region}): network {vnet}, NSG {nsg_name}")
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
        nsg = await self.azure.wait(f"creating the NSG {nsg_name} in {group}",
                                    network.network_security_groups.begin_create_or_update, group, nsg_name,
                                    {"location": self.region, "tags": tags, "properties": {"securityRules": rules}})
        await self.azure.wait(f"creating the vnet {vnet} in {group}", network.virtual_networks.begin_create_or_update,
                              group, vnet, {"location": self.region, "tags": tags, "properties": {
                                  "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                                  "subnets": [{"name": subnet, "properties": {
                                      "addressPrefix": "10.0.0.0/24",
                                      "networkSecurityGroup": {"id": wire(nsg).get("id")
                                                               or self._id(group, "Microsoft.Network",
                                                                           "networkSecurityGroups", nsg_name)}}}]}})

    async def rules(self) -> list[Resource]:
        """cumulo's resource groups (tagged), each as the firewall rule of its cluster; and, for a cluster in an
        existing group, its NSG (tagged) there."""
        groups = await self.azure.call("listing resource groups",
                                       lambda: list(self.azure.resources.resource_groups.list(
                                           filter=f"tagName eq '{INSTALLATION}'")))
        out = []
        own: set[str] = set()
        for g in map(wire, groups):
            tags = tuple(sorted((str(k), str(v)) for k, v in (g.get("tags") or {}).items()))
            mark = mark_of(tags)
            if mark is None:
                continue
            own.add(str(g.get("name", "")).lower())
            rule = name_of(Mark(mark.installation, mark.cluster_id, RULE_SUFFIX[1:]))
            out.append(Resource(rule, rule, f"resource group {g.get('name')} in {g.get('location')} (network, "
                                "NSG, public IP, disks)", tags))
        nsgs = await self.azure.call("listing network security groups",
                                     lambda: list(self.azure.network.network_security_groups.list_all()))
        for n in map(wire, nsgs):
            tags = tuple(sorted((str(k), str(v)) for k, v in (n.get("tags") or {}).items()))
            mark = mark_of(tags)
            group = resource_parts(str(n.get("id", "")))[0] if n.get("id") else ""
            if mark is None or group.lower() in own:
                continue
            rule = name_of(Mark(mark.installation, mark.cluster_id, RULE_SUFFIX[1:]))
            out.append(Resource(rule, rule, f"network of {name_of(Mark(mark.installation, mark.cluster_id))} in "
                                f"the resource group {group} (vnet, NSG, public IP, NICs, disks)", tags))
        return out

    async def remove_rules(self, names: Iterable[str]) -> int:
        """Delete the resource groups of these rules (everything left in them), waiting for ARM to confirm; for a
        cluster without a group of its own (one launched in an existing group), delete singly what it created
        there (:meth:`_remove_singly`)."""
        groups = sorted({n.removesuffix(RULE_SUFFIX) for n in names if n.endswith(RULE_SUFFIX)})
        removed = 0
        for group in groups:
            if not await self.azure.call(f"reading the resource group {group}",
                                         self.azure.resources.resource_groups.check_existence, group):
                removed += await self._remove_singly(group)
                continue
            self.say(f"deleting the resource group {group} (network, NSG, public IP, disks)")
            await self.azure.wait(f"deleting the resource group {group}",
                                  self.azure.resources.resource_groups.begin_delete, group)
            removed += 1
        return removed

    async def _leftovers(self, cluster: str) -> list[tuple[str, str]]:
        """(kind, id) of what cluster ``cumulo-<installation>-<cluster id>`` created outside a group of its own, in
        the order ARM lets them go: NICs (which hold the public IPs and the subnet), public IPs, vnets (whose
        subnet holds the NSG), NSGs, then OS disks. Network resources are the cluster's by their tags; an OS disk
        (which ARM gives no tags) by its name, ``<cluster>-<role>-disk``, and only when no VM holds it."""
        network, compute = self.azure.network, self.azure.compute
        kinds = [("NIC", network.network_interfaces), ("public IP", network.public_ip_addresses),
                 ("vnet", network.virtual_networks), ("NSG", network.network_security_groups)]
        out: list[tuple[str, str]] = []
        for kind, ops in kinds:
            listed = await self.azure.call(f"listing {kind}s", lambda ops=ops: list(ops.list_all()))
            for item in map(wire, listed):
                mark = mark_of((item.get("tags") or {}).items())
                if mark is not None and group_of(mark) == cluster:
                    out.append((kind, str(item["id"])))
        disks = await self.azure.call("listing disks", lambda: list(compute.disks.list()))
        for disk in map(wire, disks):
            name = str(disk.get("name", ""))
            if name.startswith(f"{cluster}-") and name.endswith("-disk") and not disk.get("managedBy"):
                out.append(("disk", str(disk["id"])))
        return out

    async def _remove_singly(self, cluster: str) -> int:
        """Delete, one by one and each waited for, what the cluster created in an existing resource group; then
        list again to confirm nothing of it is left (ProviderError naming what is). The group is never deleted."""
        found = await self._leftovers(cluster)
        if not found:
            return 0
        network, compute = self.azure.network, self.azure.compute
        begin = {"NIC": network.network_interfaces.begin_delete, "public IP": network.public_ip_addresses.begin_delete,
                 "vnet": network.virtual_networks.begin_delete, "NSG": network.network_security_groups.begin_delete,
                 "disk": compute.disks.begin_delete}
        for kind, rid in found:
            group, name = resource_parts(rid)
            self.say(f"deleting the {kind} {name} of {cluster} in the resource group {group}")
            await self.azure.wait(f"deleting the {kind} {name} in {group}", begin[kind], group, name)
        left = await self._leftovers(cluster)
        if left:
            raise ProviderError(f"Azure still lists what {cluster} created after deleting it: "
                                + ", ".join(rid for _, rid in left) + ": retry with `cumulo down` or `cumulo reap`")
        return len(found)
