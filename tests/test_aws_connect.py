"""AWS end to end on the EC2 emulator: connect with spot, a real dask computation, close, nothing left.

The instances are real local processes (tests/aws_emulator.py); the provider
reaches moto's server only through boto3's endpoint setting.
"""

from __future__ import annotations

import logging

import boto3
import cumulo
import pytest
from cumulo.life.registry import Registry

from .aws_emulator import AwsEmulator
from .aws_support import aws, no_aws_leftovers  # noqa: F401,F811  (fixtures)

pytestmark = pytest.mark.timeout(180)


def test_spot_cluster_computes_bills_what_it_launched_and_leaves_nothing(
        aws: AwsEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cumulo.aws")
    cluster = cumulo.connect("aws", gpu="A10G", workers=2, spot=True, name="spotty")
    try:
        client = cluster.client
        assert client.submit(lambda x: x + 1, 41).result() == 42
        assert len(client.scheduler_info()["workers"]) == 2
        # the head is on-demand (losing it loses the cluster); the worker is spot in the cheapest zone
        insts = {dict((t["key"], t["value"]) for t in i.get_tags())["cumulo:role"]: i for i in aws.live()}
        assert set(insts) == {"head", "workers"}
        assert insts["head"].lifecycle is None and insts["workers"].lifecycle == "spot"
        assert insts["workers"].placement.zone == "us-east-1b"
        for inst in insts.values():
            assert inst.instance_type == "g5.xlarge"
            assert inst.instance_initiated_shutdown_behavior == "terminate"
            assert inst.metadata_options.http_tokens == "required"
            assert inst.image_id == aws.ami_parameters[next(iter(aws.ami_parameters))]
        row = Registry().get(cluster.id)
        assert row.rate_per_hour == pytest.approx(1.006 + 0.38)
        metas = {r.meta["market"]: r.meta for r in Registry().resources(cluster_id=cluster.id) if r.kind == "instance"}
        assert metas["spot"]["price_per_hour"] == pytest.approx(0.38) and metas["spot"]["zone"] == "us-east-1b"
        assert "spot price of us-east-1b" in metas["spot"]["price_basis"]
        assert metas["on-demand"]["price_per_hour"] == pytest.approx(1.006)
        # one security group: the scheduler's port and SSH from this machine only, and the members to each other
        (group,) = [g for g in boto3.client("ec2").describe_security_groups()["SecurityGroups"]
                    if g["GroupName"].startswith("cumulo-")]
        cidrs = {(p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p.get("IpRanges", [])}
        peers = {(p["FromPort"], p["ToPort"], g["GroupId"]) for p in group["IpPermissions"]
                 for g in p.get("UserIdGroupPairs", [])}
        assert cidrs == {(8786, "127.0.0.1/32"), (22, "127.0.0.1/32")}
        assert peers == {(0, 65535, group["GroupId"])}
        lines = [r.getMessage() for r in caplog.records if r.name == "cumulo.aws"]
        (offer,) = [line for line in lines if line.startswith("offer:")]
        assert "head us-east-1a, on-demand, $1.006/h" in offer and "us-east-1b, spot, $0.38/h" in offer
    finally:
        cluster.close()
    assert Registry().get(cluster.id).state == "closed"
    assert aws.wait_idle()
