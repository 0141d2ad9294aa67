"""Everything an Azure launch can be refused for, decided before anything bills (and before any registry row).

:func:`refuse_unsupported` refuses without a request what cannot launch at
all (unknown options, spot for now, no workers, an unknown region);
:func:`make_plan` turns a spec into a :class:`~..cloud.plan.Plan`: the VM size
(shapes.py, from the catalog), whether the subscription offers it in the
region (Resource SKUs, with its restrictions), the image, the price check, the
vCPU quotas (quotas.py) and the firewall source. Or it raises why not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ... import config
from ...cost import catalog
from ...exceptions import CapacityError, SpecError, did_you_mean
from ...spec import ClusterSpec
from ..cloud import network
from ..cloud.plan import Plan, check_price, last_resort_idle, last_resort_lease
from ..cloud.settings import CloudSay, CloudSettings
from .quotas import check_quota
from .regions import REGIONS
from .shapes import choose_shape, shapes

if TYPE_CHECKING:
    from .adapter import AzureAdapter

__all__ = ["OPTIONS", "Offer", "image_reference", "make_plan", "refuse_unsupported", "region_of"]

#: connect() keywords the Azure provider takes besides the spec's fields.
OPTIONS = {"confirm": "options={'confirm': True} accepts a price above cumulo.cloud.confirm-above-per-hour",
           "subscription_id": "subscription_id='...' picks the subscription (else cumulo.azure.subscription-id or "
                              "AZURE_SUBSCRIPTION_ID)"}


def region_of(spec: ClusterSpec) -> str:
    """The region to launch in: region=, else cumulo.azure.region."""
    return str(spec.region or config.get("azure.region"))


def refuse_unsupported(spec: ClusterSpec) -> None:
    """What cannot launch at all, refused without a request (and without credentials)."""
    spec.require_workers(why="Azure would still bill the VM that runs its scheduler")
    for key in spec.options:
        if key not in OPTIONS:
            raise SpecError(f"the Azure provider has no option {key!r}{did_you_mean(key, OPTIONS)}; it takes: "
                            + "; ".join(OPTIONS.values()))
    if spec.spot:
        raise SpecError("Azure Spot VMs are not supported by cumulo yet: pass spot=False (regular priority, "
                        "billed at the pay-as-you-go price); see docs/azure.md")
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


class Offer:
    """What the plan resolved that only Azure's adapter needs: the image reference."""

    def __init__(self, *, image: dict[str, str]) -> None:
        self.image = image


def image_reference(urn: str) -> dict[str, str]:
    """A marketplace image ``publisher:offer:sku:version`` as ARM's imageReference; SpecError otherwise."""
    parts = urn.split(":")
    if len(parts) != 4 or not all(parts):
        raise SpecError(f"the Azure image {urn!r} is not publisher:offer:sku:version (e.g. "
                        "'microsoft-dsvm:ubuntu-hpc:2204:latest'): pass image= or set cumulo.azure.image")
    return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))


def _image(spec: ClusterSpec) -> dict[str, str]:
    return image_reference(str(spec.image or config.get("azure.image")))


async def make_plan(cloud: AzureAdapter, spec: ClusterSpec, say: CloudSay, settings: CloudSettings) -> Plan:
    """Resolve ``spec`` against Azure's offers now and show the offer, or raise why it cannot launch."""
    refuse_unsupported(spec)
    region = region_of(spec)
    shape = choose_shape(shapes(catalog.prices(provider="azure"), region), gpu=spec.gpu,
                         vm_size=spec.instance_type, gpus_per_instance=spec.gpus_per_worker)
    image = _image(spec)
    n = max(spec.workers if spec.workers is not None else 1, 1)
    rate = n * shape.on_demand
    where = "" if shape.price_region == region else f"; the {shape.price_region} price: {region} may differ"
    say(f"offer: {n} x {shape.summary()} in {region} at ${shape.on_demand:.4g}/h each (pay-as-you-go, "
        f"{shape.price_source}{where}); estimated ${rate:.2f}/h, billed until deleted")
    check_price(rate, spec, settings)
    family = await _offered(cloud, region, shape.vm_size)
    await check_quota(cloud.azure, region, family=family, vcpus=n * shape.vcpus, say=say)
    source = network.client_cidr(cloud.api_url, configured=config.get("azure.client-cidr"),
                                 setting="cumulo.azure.client-cidr", cloud="Azure")
    return Plan(instance_type=shape.vm_size, region=region, price_per_hour=shape.on_demand, instances=n,
                rate_per_hour=rate, ssh_key=None, source=source, idle_timeout=last_resort_idle(spec, settings),
                client_lease=last_resort_lease(spec), shape=Offer(image=image))
