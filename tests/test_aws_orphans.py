"""What AWS holds that no open cluster owns: found by tags, this installation's terminated, others' left alone.

- a kernel SIGKILLed during a launch leaves a row and instances; the reaper stops them from the registry;
- instances, security groups and key pairs tagged by this installation for a cluster the registry does
  not know are terminated and removed by the sweep; another installation's are reported and terminated
  only with terminate_unknown; an instance without cumulo's tags is never touched;
- ownership is the tags': renaming an instance in the console does not hide it from teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import dask
import pytest
from cumulo.life import reaper
from cumulo.life.registry import Registry
from cumulo.providers.aws import AWSProvider
from cumulo.providers.cloud import Mark
from cumulo.spec import ClusterSpec

from .aws_emulator import AwsEmulator
from .aws_support import aws, fast_config, no_aws_leftovers  # noqa: F401,F811  (fixtures)
from .cloud_support import close, kill_mid_launch, killed_launch, start, stop_from_row

pytestmark = pytest.mark.timeout(180)

#: A kernel that launches a 2-worker AWS cluster: the test SIGKILLs it part way through the launch.
KILLED_LAUNCH = killed_launch("aws", "AWSProvider", gpu="A10G")


def _run_tagged(mark: Mark | None, name: str) -> str:
    """An instance launched outside cumulo (a console, another laptop), tagged with ``mark`` or not at all."""
    tags = [{"Key": "Name", "Value": name}]
    if mark is not None:
        tags += [{"Key": "cumulo:installation", "Value": str(mark.installation)},
                 {"Key": "cumulo:cluster", "Value": str(mark.cluster_id)}, {"Key": "cumulo:role", "Value": mark.role}]
    answer = boto3.client("ec2").run_instances(
        ImageId="ami-0a1b2c3d4e5f60718", InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    return str(answer["Instances"][0]["InstanceId"])


def _state(instance_id: str) -> str:
    answer = boto3.client("ec2").describe_instances(InstanceIds=[instance_id])
    return str(answer["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_a_kernel_killed_mid_launch_is_cleaned_up_by_the_reaper(aws: AwsEmulator, tmp_path: Path) -> None:
    cid = kill_mid_launch(KILLED_LAUNCH, fast_config(tmp_path))
    registry = Registry()
    assert aws.live() and aws.cumulo_groups()  # it bills, but it is visible: an open row
    with dask.config.set({"cumulo.guards.lease-grace": "60s"}):
        registry.update(cid, heartbeat=time.time() - 120)
        done = reaper.sweep(registry).clusters
    assert [(r.name, r.action) for r in done] == [("killed", "stopped")]
    assert registry.get(cid).state == "closed"
    assert aws.wait_idle() and not aws.cumulo_groups() and not aws.cumulo_keys()


def test_sweep_terminates_ours_reports_others_and_never_touches_the_untagged(aws: AwsEmulator) -> None:
    registry = Registry()
    ec2 = boto3.client("ec2")
    ours = _run_tagged(Mark(registry.installation_id, "c0ffee000001", "head"), "renamed-in-the-console")
    # its cluster's security group and key pair, left by the same lost cluster
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    mark_tags = [{"Key": "cumulo:installation", "Value": registry.installation_id},
                 {"Key": "cumulo:cluster", "Value": "c0ffee000001"}]
    ec2.create_security_group(GroupName=f"cumulo-{registry.installation_id}-c0ffee000001-scheduler-tls",
                              Description="left", VpcId=vpc,
                              TagSpecifications=[{"ResourceType": "security-group", "Tags": mark_tags}])
    theirs = _run_tagged(Mark("0badc0de", "c0ffee000002", "head"), "cumulo-0badc0de-c0ffee000002-head")
    untagged = _run_tagged(None, "someones-training-box")
    provider = AWSProvider()
    try:
        dry = asyncio.run(provider.sweep_orphans(registry, dry_run=True))
        assert {(o.resource_id, o.action) for o in dry if o.kind == "instance"} == {
            (ours, "would terminate"), (theirs, "reported")}
        assert _state(ours) == "running"  # a dry run changes nothing
        done = asyncio.run(provider.sweep_orphans(registry, dry_run=False))
        assert {(o.resource_id, o.action) for o in done if o.kind == "instance"} == {
            (ours, "terminated"), (theirs, "reported")}
        (reported,) = [o for o in done if o.resource_id == theirs]
        assert "another cumulo installation (0badc0de" in reported.reason and not reported.ours
        assert _state(ours) == "terminated" and _state(theirs) == "running" and _state(untagged) == "running"
        assert not aws.cumulo_groups()
        unknown = asyncio.run(provider.sweep_orphans(registry, dry_run=False, terminate_unknown=True))
        assert {(o.resource_id, o.action) for o in unknown if o.kind == "instance"} == {(theirs, "terminated")}
        assert _state(theirs) == "terminated" and _state(untagged) == "running"
    finally:
        ec2.terminate_instances(InstanceIds=[untagged, theirs, ours])


def test_renaming_an_instance_does_not_hide_it_from_teardown(aws: AwsEmulator) -> None:
    s = asyncio.run(start(ClusterSpec(provider="aws", gpu="A10G", workers=2), provider=AWSProvider()))
    ec2 = boto3.client("ec2")
    for inst in aws.live():
        ec2.create_tags(Resources=[inst.id], Tags=[{"Key": "Name", "Value": "my-renamed-box"}])
    # a kernel killed between the launch answer and recording it: the worker is only known by its tags
    registry = Registry()
    worker = [r for r in registry.resources(cluster_id=s.id) if r.kind == "instance"][-1]
    with registry._connect() as db:
        db.execute("DELETE FROM resources WHERE resource_id = ?", (worker.resource_id,))
    asyncio.run(close(s))
    assert not aws.live() and registry.get(s.id).state == "closed"


#: A kernel that launches a cluster from the spec in argv[2] with config argv[1], prints its row id once it is
#: ready, and then does nothing: the test SIGKILLs it.
READY_THEN_FORGOTTEN = """
import asyncio, json, sys
import dask
from cumulo.life.lifecycle import Lifecycle
from cumulo.life.registry import Registry
from cumulo.providers.aws import AWSProvider
from cumulo.spec import ClusterSpec
dask.config.set(json.loads(sys.argv[1]))
spec = ClusterSpec(**json.loads(sys.argv[2]))
provider = AWSProvider()
life = Lifecycle(Registry())
async def main():
    await provider.preflight(spec)
    record = life.begin("forgotten", provider, spec.to_dict())
    await provider.launch(spec, cluster_id=record.id, checkpoint=life.checkpoint(record, provider))
    life.running(record.id)
    print(record.id, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_a_forgotten_cluster_powers_itself_off_with_no_cumulo_process_left(aws: AwsEmulator, tmp_path: Path) -> None:
    # the workers get 15 s to join (two worker processes start slowly on a loaded 2-core machine; 4 s was seen
    # to fail in CI), so the head's idle stop comes 2 s + 15 s after its scheduler starts
    # a worker waits up to its death timeout for the head's scheduler, at start too: 3 s was seen too short for a
    # head that starts slowly on a loaded machine; 10 s still ends a forgotten worker well within the deadline
    config = {**fast_config(tmp_path), "cumulo.cloud.workers-timeout": 15, "cumulo.cloud.worker-death-timeout": 10}
    spec = {"provider": "aws", "gpu": "A10G", "workers": 2, "idle_timeout": 2}
    log = tmp_path / "forgotten-kernel.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", READY_THEN_FORGOTTEN, json.dumps(config), json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=os.environ.copy())
    try:
        cid = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert cid, f"the cluster never became ready: {log.read_text()[-3000:]}"
    finally:
        proc.send_signal(signal.SIGKILL)  # the laptop sleeps, the kernel is gone: nobody of cumulo's is left
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert len(aws.live()) == 2
    # the head's scheduler stops after its idle timeout (2 s + the 15 s workers may take to join), the head powers
    # off; the worker's scheduler is gone, it exits after 10 s and powers off too: both terminate themselves
    deadline = time.monotonic() + 90
    while aws.live() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not aws.live() and sorted(aws.powered_off) == sorted(i.id for i in aws.instances())
    assert not aws.running_process_groups()
    # the row is still open (its kernel died before closing it): the reaper finds the instances gone (and
    # says so), then the sweep removes the security group and key pair of a cluster that is no longer open
    registry = Registry()
    registry.update(cid, heartbeat=time.time() - 3600)
    with dask.config.set({"cumulo.guards.lease-grace": "1s"}):
        done = reaper.sweep(registry).clusters
    assert [(r.name, r.action) for r in done] == [
        ("forgotten", "marked lost (its instances were terminated elsewhere: nothing bills)")]
    assert not registry.get(cid).is_open
    asyncio.run(AWSProvider().sweep_orphans(registry, dry_run=False))
    assert not aws.cumulo_groups() and not aws.cumulo_keys()


#: A kernel that connects (a dask client that heartbeats its scheduler), prints the cluster's id, then waits;
#: the test stops it (SIGSTOP: a laptop asleep) or lets it disconnect on purpose (argv[3] == "disconnect").
CONNECTED_THEN_ASLEEP = """
import json, sys, time
import dask
dask.config.set(json.loads(sys.argv[1]))
import cumulo
cluster = cumulo.connect("aws", **json.loads(sys.argv[2]))
print(cluster.id, flush=True)
if sys.argv[3] == "disconnect":
    cluster.disconnect()
    print("disconnected", flush=True)
time.sleep(3600)
"""


def _kernel(tmp_path: Path, name: str, *, lease: str, then: str) -> tuple[subprocess.Popen, str]:
    """A kernel holding a 2-instance cluster whose idle timeout is an hour away: only the lease can end it.

    The switch gives a new scheduler the workers' timeout (here 15 s) plus the lease before it must have
    heard a client: the launch attaches within that even on a loaded machine."""
    # the kernel's client heartbeats every 0.5 s, so that a lease of seconds is three heartbeats or more (the
    # head's lease is never shorter: a live kernel must not be declared gone between two heartbeats)
    config = {**fast_config(tmp_path), "cumulo.cloud.workers-timeout": 15, "cumulo.cloud.worker-death-timeout": 10,
              "cumulo.guards.lease-grace": lease, "cumulo.guards.idle-timeout": "1h",
              "distributed.client.heartbeat": "0.5s"}
    spec = {"gpu": "A10G", "workers": 2, "name": name}
    log = tmp_path / f"{name}-kernel.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CONNECTED_THEN_ASLEEP, json.dumps(config), json.dumps(spec),
                                 then], stdout=subprocess.PIPE, stderr=err, text=True, env=os.environ.copy())
    cid = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if then == "disconnect":
        said = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert said == "disconnected", log.read_text()[-3000:]
    return proc, cid


def test_a_busy_cluster_whose_kernel_is_asleep_stops_itself_after_the_lease(aws: AwsEmulator, tmp_path: Path) -> None:
    proc, cid = _kernel(tmp_path, "asleep", lease="5s", then="stay")
    try:
        assert cid, "the cluster never became ready"
        # while the kernel runs, its client heartbeats: longer than the lease, nothing stops
        time.sleep(8)
        assert len(aws.live()) == 2 and not aws.powered_off
        proc.send_signal(signal.SIGSTOP)  # the laptop sleeps: no heartbeat, no cumulo process acting
        deadline = time.monotonic() + 60
        while aws.live() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not aws.live() and sorted(aws.powered_off) == sorted(i.id for i in aws.instances())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    registry = Registry()
    registry.update(cid, heartbeat=time.time() - 3600)
    with dask.config.set({"cumulo.guards.lease-grace": "1s"}):
        reaper.sweep(registry)
    asyncio.run(AWSProvider().sweep_orphans(registry, dry_run=False))
    assert not registry.get(cid).is_open and not aws.cumulo_groups() and not aws.cumulo_keys()


def test_a_cluster_disconnected_on_purpose_outlives_the_lease(aws: AwsEmulator, tmp_path: Path) -> None:
    proc, cid = _kernel(tmp_path, "detached", lease="3s", then="disconnect")
    try:
        proc.send_signal(signal.SIGKILL)  # the kernel is gone after disconnect(): that was the user's choice
        proc.wait(10)
        time.sleep(12)  # three leases (9 s) and the workers' death timeout (10 s)
        assert len(aws.live()) == 2 and not aws.powered_off
    finally:
        proc.kill()
        proc.stdout.close()  # type: ignore[union-attr]
    asyncio.run(stop_from_row(Registry(), cid, AWSProvider()))  # as `cumulo down detached` does
    assert not aws.live() and Registry().get(cid).state == "closed"


def test_the_heads_lease_is_never_shorter_than_three_client_heartbeats() -> None:
    """A kernel that is alive is heard only when its client heartbeats: a shorter lease would stop its cluster
    (CI saw a 3 s lease against dask's default 5 s heartbeat)."""
    from cumulo.providers.cloud.plan import last_resort_lease
    from cumulo.spec import ClusterSpec

    spec = ClusterSpec(provider="aws", gpu="A10G", workers=2)
    with dask.config.set({"cumulo.guards.lease-grace": "3s", "distributed.client.heartbeat": "5s"}):
        assert last_resort_lease(spec) == 15.0
    with dask.config.set({"cumulo.guards.lease-grace": "3s", "distributed.client.heartbeat": "0.5s"}):
        assert last_resort_lease(spec) == 3.0
    with dask.config.set({"cumulo.guards.lease-grace": "10m"}):
        assert last_resort_lease(spec) == 600.0
    with dask.config.set({"cumulo.guards.lease-grace": "10m", "cumulo.guards.keep-alive": True}):
        assert last_resort_lease(spec) is None
