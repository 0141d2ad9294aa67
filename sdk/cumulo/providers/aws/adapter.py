"""AWS EC2 as the cloud layer's adapter: instances, a security group and a key pair per cluster, marks as tags.

What is AWS's own here: spot capacity tried zone by zone and market by market
(market.py) inside one ``create``, each RunInstances carrying a ClientToken so
a retry after a timeout never launches twice; instances that terminate when
they power off (``InstanceInitiatedShutdownBehavior=terminate``) and require
IMDSv2; a security group per cluster that admits the scheduler's TLS port from
the client's network and the cluster's own members to each other; instances
listed over every region this adapter knows of (the launch region and the
regions recorded in the registry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ... import config
from ...exceptions import CapacityError, ProviderError, SpecError
from ..cloud.adapter import ACTIVE, BOOTING, CloudAdapter, Instance, Mark, Resource
from ..cloud.plan import Plan
from .api import Aws
from .market import Attempt, Offer
from .tags import INSTALLATION, mark_of, name_of, tag_spec

__all__ = ["PROVIDER", "AWSAdapter"]

PROVIDER = "aws"
#: EC2 instance states in the layer's words (stopped instances bill their disks: not gone).
_STATES = {"pending": BOOTING, "running": ACTIVE, "shutting-down": "terminating", "terminated": "terminated",
           "stopping": "stopping", "stopped": "stopped"}
_SPOT = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time",
                                               "InstanceInterruptionBehavior": "terminate"}}


def _tags(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((str(t["Key"]), str(t["Value"])) for t in data.get("Tags") or [])


#: The instances' sshd port (the image's), opened to the client alongside the scheduler's.
SSH_PORT = 22


class AWSAdapter(CloudAdapter):
    """EC2 (through api.Aws) as the cloud layer drives it; see the module docstring."""

    provider = PROVIDER
    title = "AWS"
    batch_launch = True  # RunInstances with MinCount = MaxCount = the workers: all or none, in one zone
    power_off = "shutdown -h now"  # InstanceInitiatedShutdownBehavior=terminate: powering off ends the bill
    notice = (Path(__file__).parent / "notice.py").read_text()  # spot interruption notices (IMDSv2)

    def __init__(self, aws: Aws | None = None, *, regions: Iterable[str] = (),
                 say: Callable[[str], None] | None = None) -> None:
        self.aws = aws or Aws()
        #: Where this adapter creates (the plan sets it); listing covers ``regions`` too.
        self.region = self.aws.default_region
        self.regions = {self.region, *regions}
        self.say = say or (lambda line: None)
        self._where: dict[str, str] = {}  # instance id -> region
        self._launched: dict[str, Attempt] = {}  # instance id -> the attempt that launched it
        self._marks: dict[str, Mark] = {}  # resource name -> its mark (name() comes first)
        self._groups: dict[str, str] = {}  # security group name -> id, in self.region
        #: The subnet to launch in (``cumulo.aws.subnet``); None: the default VPC's.
        self.subnet: str | None = config.get("aws.subnet") or None

    def prepare(self, plan: Plan) -> None:
        self.use_region(plan.region)

    def use_region(self, region: str) -> None:
        """Create in ``region`` from now on (and list it)."""
        self.region = region
        self.regions.add(region)

    @property
    def api_url(self) -> str:
        return str(self.aws.client("ec2", self.region).meta.endpoint_url)

    async def _ec2(self, operation: str, region: str | None = None, **params: Any) -> Any:
        return await self.aws.call("ec2", region or self.region, operation, **params)

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

    # -- instances -----------------------------------------------------------------------------

    async def create(self, mark: Mark, *, plan: Plan, ssh_key: str, user_data: str, count: int = 1) -> list[str]:
        offer: Offer = plan.shape
        tries = offer.head if mark.role == "head" else offer.workers
        group = await self._group_id(self.name(Mark(mark.installation, mark.cluster_id, "scheduler-tls")))
        refused: list[str] = []
        for n, attempt in enumerate(tries):
            if refused and attempt.market == "on-demand" and tries[n - 1].market == "spot":
                self.say(f"no spot capacity for {plan.instance_type} in {', '.join(refused)}: falling back to "
                         f"on-demand ({attempt.line()})")
            else:
                self.say(f"asking for {count} x {plan.instance_type} as {self.name(mark)}: {attempt.line()}")
            params: dict[str, Any] = dict(
                ImageId=offer.ami, InstanceType=plan.instance_type, MinCount=count, MaxCount=count, UserData=user_data,
                KeyName=ssh_key, SecurityGroupIds=[group], InstanceInitiatedShutdownBehavior="terminate",
                TagSpecifications=tag_spec(mark, "instance", "volume"),
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                # the same token on every retry of this request (botocore resends it as is): never two instances
                ClientToken=f"{mark.installation}-{mark.cluster_id}-{mark.role}-{n}"[:64],
            )
            if attempt.zone in offer.subnets:
                params["SubnetId"] = offer.subnets[attempt.zone]
            else:
                params["Placement"] = {"AvailabilityZone": attempt.zone}
            if attempt.market == "spot":
                params["InstanceMarketOptions"] = _SPOT
            if offer.instance_profile:
                params["IamInstanceProfile"] = {"Name": offer.instance_profile}
            try:
                answer = await self._ec2("run_instances", **params)
            except CapacityError as exc:
                code = getattr(exc, "code", "") or "no capacity"
                self.say(f"  {attempt.zone} {attempt.market}: {code}")
                refused.append(f"{attempt.zone} ({attempt.market}: {code})")
                continue
            ids = [str(i["InstanceId"]) for i in answer.get("Instances", [])]
            for iid in ids:
                self._where[iid] = self.region
                self._launched[iid] = attempt
            return ids
        raise CapacityError(
            f"AWS has no capacity for {plan.instance_type} now: tried {'; '.join(refused)}. Try another region "
            "(region=), another GPU type, or "
            + ("spot=True, which falls back to on-demand" if tries and all(t.market == "spot" for t in tries)
               else "later"))

    def launch_meta(self, instance_id: str) -> dict[str, Any]:
        attempt = self._launched.get(instance_id)
        if attempt is None:
            return {}
        return {"zone": attempt.zone, "market": attempt.market, "price_per_hour": attempt.price,
                "price_basis": attempt.basis}

    def _instance(self, data: dict[str, Any], region: str) -> Instance:
        tags = _tags(data)
        iid = str(data["InstanceId"])
        self._where[iid] = region
        attempt = self._launched.get(iid)
        return Instance(
            id=iid, name=dict(tags).get("Name", ""), status=_STATES.get(data["State"]["Name"], data["State"]["Name"]),
            ip=data.get("PublicIpAddress"), private_ip=data.get("PrivateIpAddress"),
            instance_type=data.get("InstanceType"), region=region,
            price_per_hour=attempt.price if attempt else None, labels=tags)

    async def _instances_in(self, region: str) -> list[Instance]:
        reservations = await self.aws.pages("ec2", region, "describe_instances", "Reservations")
        return [self._instance(i, region) for r in reservations for i in r.get("Instances", [])]

    async def instances(self) -> list[Instance]:
        found = await asyncio.gather(*(self._instances_in(r) for r in sorted(self.regions)))
        return [i for batch in found for i in batch]

    async def instance(self, instance_id: str) -> Instance | None:
        for region in [self._where[instance_id]] if instance_id in self._where else sorted(self.regions):
            try:
                answer = await self._ec2("describe_instances", region, InstanceIds=[instance_id])
            except SpecError:  # InvalidInstanceID.NotFound: not in this region (or forgotten)
                continue
            for r in answer.get("Reservations", []):
                for i in r.get("Instances", []):
                    return self._instance(i, region)
        return None

    async def terminate(self, instance_ids: list[str]) -> None:
        unknown = [i for i in instance_ids if i not in self._where]
        if unknown:
            await self.instances()
        by_region: dict[str, list[str]] = {}
        for iid in instance_ids:
            by_region.setdefault(self._where.get(iid, self.region), []).append(iid)
        for region, ids in sorted(by_region.items()):
            await self._ec2("terminate_instances", region, InstanceIds=ids)

    # -- the security group --------------------------------------------------------------------

    async def _vpc(self) -> str:
        if self.subnet:
            found = await self._ec2("describe_subnets", SubnetIds=[self.subnet])
            return str(found["Subnets"][0]["VpcId"])
        vpcs = (await self._ec2("describe_vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}]))["Vpcs"]
        if not vpcs:
            raise SpecError(f"the AWS region {self.region} has no default VPC: set cumulo.aws.subnet to a subnet "
                            "(subnet-...) to launch in")
        return str(vpcs[0]["VpcId"])

    async def _group_id(self, name: str) -> str:
        if name not in self._groups:
            found = await self._ec2("describe_security_groups", Filters=[{"Name": "group-name", "Values": [name]}])
            if not found["SecurityGroups"]:
                raise ProviderError(f"the security group {name} is missing in {self.region}; cumulo creates it "
                                    "before launching")
            self._groups[name] = str(found["SecurityGroups"][0]["GroupId"])
        return self._groups[name]

    async def open_port(self, name: str, *, port: int, source: str) -> None:
        """A security group for the cluster: ``port`` and SSH from ``source`` only, and every TCP port among its
        members. SSH logs in with the cluster's own key only; the Jupyter server tunnels to the head's dashboard
        over it (cloud/head_ssh.py), and it is how a user reads an instance's bootstrap log."""
        mark = self._mark(name)
        created = await self._ec2(
            "create_security_group", GroupName=name, VpcId=await self._vpc(),
            Description=f"cumulo cluster {mark.cluster_id}: scheduler TLS from the client, members to each other",
            TagSpecifications=tag_spec(mark, "security-group"))
        group = self._groups[name] = str(created["GroupId"])
        await self._ec2("authorize_security_group_ingress", GroupId=group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
             "IpRanges": [{"CidrIp": source, "Description": "cumulo: the scheduler's TLS port, from the client"}]},
            {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT,
             "IpRanges": [{"CidrIp": source, "Description": "cumulo: SSH with the cluster's key, from the client"}]},
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
             "UserIdGroupPairs": [{"GroupId": group, "Description": "cumulo: the cluster's own instances"}]},
        ])

    async def rules(self) -> list[Resource]:
        out = []
        for region in sorted(self.regions):
            found = await self.aws.pages("ec2", region, "describe_security_groups", "SecurityGroups",
                                         Filters=[{"Name": "tag-key", "Values": [INSTALLATION]}])
            for g in found:
                out.append(Resource(str(g["GroupName"]), str(g["GroupName"]),
                                    f"security group {g['GroupId']} in {region}", _tags(g)))
        return out

    async def remove_rules(self, names: Iterable[str]) -> int:
        """Delete the security groups with these names, in every known region (waiting out a lagging detach)."""
        wanted = sorted(set(names))
        if not wanted:
            return 0
        removed = 0
        for region in sorted(self.regions):
            found = await self._ec2("describe_security_groups", region,
                                    Filters=[{"Name": "group-name", "Values": wanted}])
            for group in found["SecurityGroups"]:
                await self._delete_group(region, str(group["GroupId"]))
                self._groups.pop(str(group["GroupName"]), None)
                removed += 1
        return removed

    async def _delete_group(self, region: str, group_id: str, *, tries: int = 30) -> None:
        for n in range(tries):
            try:
                await self._ec2("delete_security_group", region, GroupId=group_id)
                return
            except ProviderError as exc:
                # a terminated instance's network interface lets go of its group a little after termination
                if getattr(exc, "code", "") != "DependencyViolation" or n == tries - 1:
                    raise
                await asyncio.sleep(2.0)

    # -- the key pair --------------------------------------------------------------------------

    async def add_ssh_key(self, name: str, public_key: str) -> str | None:
        answer = await self._ec2("import_key_pair", KeyName=name, PublicKeyMaterial=public_key.encode(),
                                 TagSpecifications=tag_spec(self._mark(name), "key-pair"))
        return str(answer.get("KeyPairId") or "") or None

    async def ssh_keys(self) -> list[Resource]:
        out = []
        for region in sorted(self.regions):
            found = await self._ec2("describe_key_pairs", region,
                                    Filters=[{"Name": "tag-key", "Values": [INSTALLATION]}])
            out += [Resource(str(k["KeyName"]), str(k["KeyName"]), f"key pair in {region}", _tags(k))
                    for k in found.get("KeyPairs", [])]
        return out

    async def remove_ssh_keys(self, names: Iterable[str]) -> int:
        wanted = sorted(set(names))
        if not wanted:
            return 0
        removed = 0
        for region in sorted(self.regions):
            found = await self._ec2("describe_key_pairs", region, Filters=[{"Name": "key-name", "Values": wanted}])
            for key in found.get("KeyPairs", []):
                await self._ec2("delete_key_pair", region, KeyName=str(key["KeyName"]))
                removed += 1
        return removed

