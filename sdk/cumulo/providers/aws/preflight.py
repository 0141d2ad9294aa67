"""Everything an AWS launch can be refused for, decided before anything bills (and before any registry row).

:func:`make_plan` turns a spec into a :class:`~..cloud.plan.Plan` whose
``shape`` is a :class:`~.market.Offer`: the instance type (shapes.py), the
zones that offer it, spot prices per zone and the attempts in order
(market.py), the image (``ami=``, ``cumulo.aws.ami``, or AWS's Deep Learning
Base GPU AMI through its public SSM parameter), the vCPU quota (quotas.py),
the price check, the key pair and the firewall source. Or it raises why not.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ... import config
from ...cost import catalog
from ...exceptions import CapacityError, SpecError, did_you_mean
from ...spec import ClusterSpec
from ..cloud import network
from ..cloud.plan import Plan, check_price, last_resort_idle, last_resort_lease
from ..cloud.settings import CloudSay, CloudSettings
from .market import Offer, SpotPrice, attempts
from .quotas import check_quota
from .shapes import Shape, architecture, choose_shape, shapes

if TYPE_CHECKING:
    from .adapter import AWSAdapter

__all__ = ["OPTIONS", "make_plan", "refuse_unsupported"]

#: connect() keywords the AWS provider takes besides the spec's fields.
OPTIONS = {"confirm": "options={'confirm': True} accepts a price above cumulo.cloud.confirm-above-per-hour",
           "ami": "ami='ami-...' picks the image",
           "iam_instance_profile": "iam_instance_profile='NAME' gives the instances an IAM role (docs/aws.md)",
           "forward_credentials": "forward_credentials=True sends the workers the notebook's short-lived AWS "
                                  "credentials, kept fresh (docs/aws.md)"}


def refuse_unsupported(spec: ClusterSpec) -> None:
    """What cannot launch at all, refused without a request (and without credentials)."""
    spec.require_workers(why="AWS would still bill the instance that runs its scheduler")
    for key in spec.options:
        if key not in OPTIONS:
            raise SpecError(f"the AWS provider has no option {key!r}{did_you_mean(key, OPTIONS)}; it takes: "
                            + "; ".join(OPTIONS.values()))


async def _zones(cloud: AWSAdapter, region: str, instance_type: str) -> list[str]:
    if cloud.subnet:
        found = await cloud.aws.call("ec2", region, "describe_subnets", SubnetIds=[cloud.subnet])
        return [str(found["Subnets"][0]["AvailabilityZone"])]
    offers = await cloud.aws.pages("ec2", region, "describe_instance_type_offerings", "InstanceTypeOfferings",
                                   LocationType="availability-zone",
                                   Filters=[{"Name": "instance-type", "Values": [instance_type]}])
    return sorted({str(o["Location"]) for o in offers})


async def _spot_prices(cloud: AWSAdapter, region: str, instance_type: str) -> dict[str, SpotPrice]:
    history = await cloud.aws.pages(
        "ec2", region, "describe_spot_price_history", "SpotPriceHistory", InstanceTypes=[instance_type],
        ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"], StartTime=datetime.now(timezone.utc))
    latest: dict[str, SpotPrice] = {}
    for row in history:
        zone, since = str(row["AvailabilityZone"]), row["Timestamp"]
        if zone not in latest or since > latest[zone].since:
            latest[zone] = SpotPrice(zone, float(row["SpotPrice"]), since)
    return latest


async def _ami(cloud: AWSAdapter, spec: ClusterSpec, region: str, instance_type: str) -> str:
    chosen = spec.options.get("ami") or spec.image or config.get("aws.ami")
    if chosen:
        return str(chosen)
    arch = architecture(instance_type)
    parameter = str(config.get("aws.ami-parameter-arm64" if arch == "arm64" else "aws.ami-parameter"))
    try:
        answer = await cloud.aws.call("ssm", region, "get_parameter", Name=parameter)
    except SpecError:  # ParameterNotFound
        raise SpecError(
            f"the public SSM parameter {parameter} (AWS's Deep Learning Base GPU AMI, {arch}) is not available in "
            f"{region}: pass ami='ami-...' to connect(), or set cumulo.aws.ami") from None
    return str(answer["Parameter"]["Value"])


def _on_demand_basis(shape: Shape, region: str) -> str:
    where = "" if shape.price_region in (region, "all") else f"; the {shape.price_region} price: {region} may differ"
    return f"on-demand {shape.price_source}{where}"  # catalog.prices' label: bundled or fetched by a refresh


async def make_plan(cloud: AWSAdapter, spec: ClusterSpec, say: CloudSay, settings: CloudSettings) -> Plan:
    """Resolve ``spec`` against AWS's offers now and show the offer, or raise why it cannot launch."""
    refuse_unsupported(spec)
    region = spec.region or cloud.aws.default_region
    cloud.aws.check_region(region)
    cloud.use_region(region)
    shape = choose_shape(shapes(catalog.prices(provider="aws"), region), gpu=spec.gpu,
                         instance_type=spec.instance_type, gpus_per_instance=spec.gpus_per_worker)
    assert shape.on_demand is not None  # choose_shape only returns priced shapes
    zones = await _zones(cloud, region, shape.instance_type)
    if not zones:
        raise CapacityError(f"AWS offers no {shape.instance_type} in {region}: pass region= with one that has it, "
                            "or another GPU type")
    spot_prices = await _spot_prices(cloud, region, shape.instance_type) if spec.spot else {}
    if spec.spot and not spot_prices:
        say(f"AWS lists no spot price for {shape.instance_type} in {region}: spot is not offered there")
    basis = _on_demand_basis(shape, region)
    common: dict[str, Any] = dict(spot=spec.spot, zones=zones, spot_prices=spot_prices, on_demand=shape.on_demand,
                                  on_demand_basis=basis)
    head = attempts(**common, head=True, head_spot=bool(config.get("aws.head-spot")))
    workers = attempts(**common)
    if not head or not workers:
        raise CapacityError(f"no spot offer for {shape.instance_type} in {region} and spot='only' never falls "
                            "back: pass spot=True to fall back to on-demand, or another region")
    n = max(spec.workers if spec.workers is not None else 1, 1)
    rate = head[0].price + (n - 1) * workers[0].price
    say(f"offer: {n} x {shape.summary()} in {region}: head {head[0].line()}"
        + (f"; {n - 1} worker(s) {workers[0].line()}" if n > 1 else "")
        + f"; estimated ${rate:.2f}/h, billed until terminated")
    check_price(rate, spec, settings)
    for market in sorted({a.market for a in (head[0], workers[0])}):
        vcpus = shape.vcpus * sum(1 for a in [head[0]] + [workers[0]] * (n - 1) if a.market == market)
        await check_quota(cloud.aws, region, instance_type=shape.instance_type, vcpus=vcpus, market=market, say=say)
    ami = await _ami(cloud, spec, region, shape.instance_type)
    key = config.get("aws.key-name") or None
    if key is not None:
        found = await cloud.aws.call("ec2", region, "describe_key_pairs",
                                     Filters=[{"Name": "key-name", "Values": [key]}])
        if not found.get("KeyPairs"):
            raise SpecError(f"cumulo.aws.key-name is {key!r}, but {region} has no key pair of that name. Fix the "
                            "name, or unset it and cumulo makes a key pair for each cluster.")
    source = network.client_cidr(cloud.api_url, configured=config.get("aws.client-cidr"),
                                 setting="cumulo.aws.client-cidr", cloud="AWS")
    profile = spec.options.get("iam_instance_profile") or config.get("aws.instance-profile") or None
    subnets = {zones[0]: cloud.subnet} if cloud.subnet else {}
    offer = Offer(ami=ami, region=region, head=tuple(head), workers=tuple(workers), subnets=subnets,
                  instance_profile=profile)
    return Plan(instance_type=shape.instance_type, region=region, price_per_hour=shape.on_demand, instances=n,
                rate_per_hour=rate, ssh_key=key, source=source, idle_timeout=last_resort_idle(spec, settings),
                client_lease=last_resort_lease(spec), shape=offer)

