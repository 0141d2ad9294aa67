"""Everything an Azure launch can be refused for, decided before anything bills (and before any registry row).

:func:`refuse_unsupported` refuses without a request what cannot launch at
all (unknown options, no workers, an unknown region, a bad Spot max price, a
resource group name Azure would refuse, an ``identity=`` that is not a
user-assigned managed identity's resource id);
:func:`make_plan` turns a spec into a :class:`~..cloud.plan.Plan`: first, with
``resource_group=``, that the group exists and is in the region; the VM size
(shapes.py, from the catalog), whether the subscription offers it in the
region (Resource SKUs, with its restrictions), the image, with ``spot=`` the
region's Spot price (spotprices.py) and the attempts in order (the shared
cloud/market.py: Spot, then regular priority unless ``spot="only"``; the head
regular unless ``cumulo.azure.head-spot``), the price check, the vCPU quotas
(quotas.py: the family's and the region's for regular VMs, low-priority vCPUs
for Spot ones) and the firewall source. Or it raises why not.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ... import config
from ...cost import catalog
from ...exceptions import CapacityError, SpecError, did_you_mean
from ...spec import ClusterSpec
from ..cloud import network
from ..cloud.market import Attempt, SpotPrice, attempts
from ..cloud.plan import Plan, check_price, last_resort_idle, last_resort_lease
from ..cloud.settings import CloudSay, CloudSettings
from .quotas import check_quota, needs
from .regions import REGIONS
from .shapes import Shape, choose_shape, shapes
from .spotprices import spot_price

if TYPE_CHECKING:
    from .adapter import AzureAdapter

__all__ = ["OPTIONS", "Offer", "describe", "identity_of", "image_reference", "make_plan", "max_price",
           "refuse_unsupported", "region_of", "resource_group_of"]

#: connect() keywords the Azure provider takes besides the spec's fields.
OPTIONS = {"confirm": "options={'confirm': True} accepts a price above cumulo.cloud.confirm-above-per-hour",
           "subscription_id": "subscription_id='...' picks the subscription (else cumulo.azure.subscription-id or "
                              "AZURE_SUBSCRIPTION_ID)",
           "resource_group": "resource_group='my-rg' launches in that existing resource group (else "
                             "cumulo.azure.resource-group; by default a group of its own per cluster)",
           "identity": "identity='/subscriptions/.../userAssignedIdentities/NAME' gives the VMs that user-assigned "
                       "managed identity (else cumulo.azure.identity)"}

#: ARM's rule for resource group names: 1-90 letters, digits, '-', '_', '.', '(' and ')', not ending in '.'.
_GROUP_NAME = re.compile(r"[-\w.()]{0,89}[-\w()]", re.ASCII)
#: A user-assigned managed identity's resource id (ARM ids are case-insensitive).
_IDENTITY_ID = re.compile(r"/subscriptions/[0-9a-f-]{36}/resourceGroups/[-\w.()]{1,90}/providers/"
                          r"Microsoft\.ManagedIdentity/userAssignedIdentities/[-\w]{3,128}", re.ASCII | re.IGNORECASE)


def region_of(spec: ClusterSpec) -> str:
    """The region to launch in: region=, else cumulo.azure.region."""
    return str(spec.region or config.get("azure.region"))


def resource_group_of(spec: ClusterSpec) -> str | None:
    """The existing resource group to launch in (resource_group=, else cumulo.azure.resource-group), or None for
    a group of the cluster's own; SpecError when the name cannot be an Azure resource group's."""
    value = spec.options.get("resource_group") or config.get("azure.resource-group")
    if value is None or value == "":
        return None
    group = str(value)
    if not _GROUP_NAME.fullmatch(group):
        raise SpecError(f"{group!r} cannot be an Azure resource group's name (1-90 letters, digits, '-', '_', '.', "
                        "'(' or ')', not ending in '.'): pass resource_group= the name of an existing group, as "
                        "`az group list --query [].name -o tsv` lists them")
    return group


def identity_of(spec: ClusterSpec) -> str | None:
    """The user-assigned managed identity the VMs get (identity=, else cumulo.azure.identity), or None; SpecError
    when it is not such an identity's resource id."""
    value = spec.options.get("identity") or config.get("azure.identity")
    if value is None or value == "":
        return None
    identity = str(value).strip()
    if not _IDENTITY_ID.fullmatch(identity):
        raise SpecError(f"{identity!r} is not the resource id of a user-assigned managed identity: pass identity= "
                        "'/subscriptions/<subscription id>/resourceGroups/<group>/providers/Microsoft.ManagedIdentity/"
                        "userAssignedIdentities/<name>', as `az identity show -g <group> -n <name> --query id -o tsv` "
                        "prints it (docs/azure.md, \"Data on the workers\")")
    return identity


def refuse_unsupported(spec: ClusterSpec) -> None:
    """What cannot launch at all, refused without a request (and without credentials)."""
    spec.require_workers(why="Azure would still bill the VM that runs its scheduler")
    for key in spec.options:
        if key not in OPTIONS:
            raise SpecError(f"the Azure provider has no option {key!r}{did_you_mean(key, OPTIONS)}; it takes: "
                            + "; ".join(OPTIONS.values()))
    if spec.spot:
        max_price()
    resource_group_of(spec)
    identity_of(spec)
    region = region_of(spec)
    if region not in REGIONS:
        raise SpecError(f"Azure has no region {region!r}{did_you_mean(region, REGIONS)}; pass region= one of "
                        f"{', '.join(sorted(REGIONS))}")


async def _offered(cloud: AzureAdapter, region: str, vm_size: str) -> str | None:
    """CapacityError unless the subscription may create ``vm_size`` in ``region`` (ARM's Resource SKUs); the
    size's VM family (the name of its vCPU quota)."""
    compute = cloud.azure.compute
    skus = await cloud.azure.call(f"listing the VM sizes of {region}", lambda: list(
        compute.resource_skus.list(filter=f"location eq '{region}'")))
    for sku in skus:
        sku = sku.as_dict() if hasattr(sku, "as_dict") else dict(sku)
        if sku.get("resourceType") != "virtualMachines" or sku.get("name") != vm_size:
            continue
        blocked = [r for r in sku.get("restrictions") or [] if r.get("type") == "Location"]
        if blocked:
            why = blocked[0].get("reasonCode", "restricted")
            raise CapacityError(f"Azure does not let this subscription create {vm_size} in {region} ({why}): pass "
                                "region= another region, or ask Azure support to lift the restriction")
        return str(sku.get("family") or "") or None
    raise CapacityError(f"Azure offers no {vm_size} in {region}: pass region= one that has it (`az vm list-skus "
                        f"--size {vm_size} --output table` lists them), or another GPU type")


def max_price() -> float:
    """``cumulo.azure.spot-max-price``: -1 (up to the pay-as-you-go price) or a cap in $/h; SpecError otherwise."""
    value = float(config.get("azure.spot-max-price"))
    if value != -1 and value <= 0:
        raise SpecError(f"cumulo.azure.spot-max-price is {value:g}: set it to -1 (Spot VMs cost up to the "
                        "pay-as-you-go price, evicted only when Azure needs the capacity) or to a price in $/h "
                        "above 0 (evicted also when the Spot price rises above it)")
    return value


@dataclass(frozen=True)
class Offer:
    """What the plan resolved that only Azure's adapter needs: the image, the attempts and the Spot cap."""

    image: dict[str, str]
    #: The attempts for the head and for each worker, in order (cloud/market.py; the "zone" is the region).
    head: tuple[Attempt, ...] = ()
    workers: tuple[Attempt, ...] = ()
    #: billingProfile.maxPrice of a Spot VM: -1 (up to the pay-as-you-go price) or a cap in $/h.
    max_price: float = -1.0
    #: An existing resource group to launch in (its resources deleted singly), or None: a group of the cluster's own.
    resource_group: str | None = None
    #: The resource id of the user-assigned managed identity the VMs carry, or None.
    identity: str | None = None


def describe(attempt: Attempt) -> str:
    """An attempt in Azure's words: "Spot, $0.9/h (...)" or "regular priority, $3.673/h (pay-as-you-go ...)"."""
    market = "Spot" if attempt.market == "spot" else "regular priority"
    return f"{market}, ${attempt.price:.4g}/h ({attempt.basis})"


def image_reference(urn: str) -> dict[str, str]:
    """A marketplace image ``publisher:offer:sku:version`` as ARM's imageReference; SpecError otherwise."""
    parts = urn.split(":")
    if len(parts) != 4 or not all(parts):
        raise SpecError(f"the Azure image {urn!r} is not publisher:offer:sku:version (e.g. "
                        "'microsoft-dsvm:ubuntu-hpc:2204:latest'): pass image= or set cumulo.azure.image")
    return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))


def _image(spec: ClusterSpec) -> dict[str, str]:
    return image_reference(str(spec.image or config.get("azure.image")))


async def _spot(shape: Shape, region: str, cap: float, say: CloudSay) -> dict[str, SpotPrice]:
    """The region's Spot price as cloud/market.py takes it ({region: price}); {} when there is none to bill at,
    or when it is above the cap (Azure would not start the VM)."""
    found = await asyncio.to_thread(spot_price, shape.vm_size, region, say=say)
    if found is None:
        return {}
    if cap != -1 and found.price > cap:
        say(f"the Spot price of {shape.vm_size} in {region} (${found.price:.4g}/h) is above cumulo.azure."
            f"spot-max-price (${cap:.4g}/h): Azure would not start a Spot VM")
        return {}
    return {region: found}


async def _existing_group(cloud: AzureAdapter, group: str, region: str) -> None:
    """SpecError unless the resource group ``group`` exists in the subscription and is in ``region``."""
    found = await cloud.azure.get_or_none(f"reading the resource group {group}",
                                          cloud.azure.resources.resource_groups.get, group)
    if found is None:
        raise SpecError(f"the resource group {group!r} does not exist in subscription {cloud.azure.subscription_id}: "
                        f"create it (`az group create --name {group} --location {region}`), pass resource_group= "
                        "a group that exists, or leave resource_group= out and cumulo makes a group per cluster")
    data = found.as_dict() if hasattr(found, "as_dict") else dict(found)
    location = str(data.get("location") or "")
    if location.replace(" ", "").lower() != region.lower():
        raise SpecError(f"the resource group {group!r} is in {location or 'no region'}, not {region}: pass "
                        f"region={location!r}, or resource_group= a group in {region}")


async def make_plan(cloud: AzureAdapter, spec: ClusterSpec, say: CloudSay, settings: CloudSettings) -> Plan:
    """Resolve ``spec`` against Azure's offers now and show the offer, or raise why it cannot launch."""
    refuse_unsupported(spec)
    region = region_of(spec)
    group, identity = resource_group_of(spec), identity_of(spec)
    if group is not None:  # before anything else is asked: a wrong group is the cheapest refusal
        await _existing_group(cloud, group, region)
    shape = choose_shape(shapes(catalog.prices(provider="azure"), region), gpu=spec.gpu,
                         vm_size=spec.instance_type, gpus_per_instance=spec.gpus_per_worker)
    image = _image(spec)
    n = max(spec.workers if spec.workers is not None else 1, 1)
    where = "" if shape.price_region == region else f"; the {shape.price_region} price: {region} may differ"
    cap = max_price() if spec.spot else -1.0
    spot_prices = await _spot(shape, region, cap, say) if spec.spot else {}
    common: dict[str, Any] = dict(spot=spec.spot, zones=[region], spot_prices=spot_prices, on_demand=shape.on_demand,
                                  on_demand_basis=f"pay-as-you-go, {shape.price_source}{where}")
    head = attempts(**common, head=True, head_spot=bool(config.get("azure.head-spot")))
    workers = attempts(**common)
    if not head or not workers:
        raise SpecError(f"there is no Spot price to bill a Spot {shape.vm_size} in {region} at (see the lines "
                        "above), and spot='only' never falls back: pass spot=True to fall back to regular priority, "
                        "or check cumulo.catalog.azure-url (Azure's retail prices API) and cumulo.azure."
                        "spot-max-price, or run `cumulo prices --refresh`")
    if spec.spot and not spot_prices:
        say(f"no Spot price to bill {shape.vm_size} in {region} at: every VM at regular priority")
    rate = head[0].price + (n - 1) * workers[0].price
    say(f"offer: {n} x {shape.summary()} in {region}: head {describe(head[0])}"
        + (f"; {n - 1} worker(s) {describe(workers[0])}" if n > 1 else "")
        + f"; estimated ${rate:.2f}/h, billed until deleted")
    check_price(rate, spec, settings)
    family = await _offered(cloud, region, shape.vm_size)
    spot_vms = sum(1 for a in [head[0]] + [workers[0]] * (n - 1) if a.market == "spot")
    await check_quota(cloud.azure, region, say=say,
                      wanted=needs(family=family, regular=(n - spot_vms) * shape.vcpus, spot=spot_vms * shape.vcpus))
    source = network.client_cidr(cloud.api_url, configured=config.get("azure.client-cidr"),
                                 setting="cumulo.azure.client-cidr", cloud="Azure")
    offer = Offer(image=image, head=tuple(head), workers=tuple(workers), max_price=cap, resource_group=group,
                  identity=identity)
    return Plan(instance_type=shape.vm_size, region=region, price_per_hour=shape.on_demand, instances=n,
                rate_per_hour=rate, ssh_key=None, source=source, idle_timeout=last_resort_idle(spec, settings),
                client_lease=last_resort_lease(spec), shape=offer)
