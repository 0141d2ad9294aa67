"""The Lambda provider against the emulator: real dask processes over TLS, driven through cumulo.lifecycle.

Provider-level: preflight, then a row, a checkpoint and launch (lambda_support.start), stop from the
owner's deployment or from the row alone, and the orphan sweep. connect() end to end is in
test_lambda_connect.py; the fault matrix with its agreement checks in test_lambda_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
from distributed import Client

from cumulo.exceptions import (
    CapacityError, CredentialsError, LaunchTimeout, ProviderError, QuotaError, RateLimited, SpecError,
    TerminateError,
)
from cumulo.life.lifecycle import Lifecycle
from cumulo.providers.lambda_cloud import LambdaApi, LambdaProvider
from cumulo.life.registry import Registry
from cumulo.spec import ClusterSpec

from .lambda_emulator import Emulator
from .lambda_support import (  # noqa: F401  (fixtures)
    KILLED_LAUNCH, close, emulator, fast_config, no_orphans, run, start, stop_from_row,
)


def _spec(**kw) -> ClusterSpec:  # type: ignore[no-untyped-def]
    kw.setdefault("gpu", "A10")
    kw.setdefault("workers", 1)
    return ClusterSpec(provider="lambda", **kw)


def test_launch_compute_close_over_tls(emulator: Emulator, tmp_path: Path) -> None:
    lines: list[str] = []

    async def go() -> None:
        s = await start(_spec(workers=2), provider=LambdaProvider(progress=lines.append))
        inst, cid = s.registry.installation_id, s.id
        dep = s.deployment
        assert dep.address.startswith("tls://127.")
        assert dep.rate_per_hour == pytest.approx(1.50)
        assert dep.security.require_encryption
        # the cluster's own ruleset in its region (the account-wide list untouched): the scheduler's port and
        # SSH, from this machine only, attached to each instance at launch
        (ruleset,) = emulator.rulesets.values()
        assert ruleset["name"] == f"cumulo-{inst}-{cid}-scheduler-tls" and ruleset["region"] == "us-east-1"
        assert [(r["port_range"], r["source_network"]) for r in ruleset["rules"]] == [
            ([8786, 8786], "127.0.0.1/32"), ([22, 22], "127.0.0.1/32")]
        assert not [r for r in emulator.firewall if r["description"].startswith("cumulo-")]
        assert all(i.rulesets == [ruleset["id"]] for i in emulator.live())
        names = sorted(i.name for i in emulator.live())
        assert names == [f"cumulo-{inst}-{cid}-head", f"cumulo-{inst}-{cid}-worker-1"]
        # tagged with this installation's mark: the name is only a label
        assert sorted((t["key"], t["value"]) for t in next(i for i in emulator.live() if i.name.endswith("head")).tags
                      ) == [("cumulo-cluster", cid), ("cumulo-installation", inst), ("cumulo-role", "head")]
        assert emulator.launches == 2, "one instance per launch request"
        key = f"cumulo-{inst}-{cid}"
        assert [k["name"] for k in emulator.ssh_keys] == ["emulator-key", key]
        assert all(i.ssh_key_names == [key] for i in emulator.live()), "never the colleague's key"
        private = tmp_path / "certs" / cid / "ssh-key"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert next(k for k in emulator.ssh_keys if k["name"] == key)["public_key"].startswith("ssh-ed25519 ")
        recorded = {r.resource_id for r in s.registry.resources(cluster_id=cid) if r.kind == "instance"}
        assert recorded == {i.id for i in emulator.live()}
        assert s.registry.get(cid).address == dep.address and s.registry.get(cid).rate_per_hour == 1.50
        async with Client(dep.address, security=dep.security, asynchronous=True) as client:
            assert await client.submit(sum, [1, 2, 3]) == 6
            hosts = {w["host"] for w in (await client.scheduler.identity())["workers"].values()}
            assert len(hosts) == 2
        with pytest.raises((OSError, asyncio.TimeoutError)):  # plain tcp to the TLS scheduler is refused
            await asyncio.wait_for(Client(dep.address.replace("tls://", "tcp://"), asynchronous=True, timeout=2), 5)
        await close(s)
        assert not emulator.live()
        assert not emulator.rulesets, "the cluster's ruleset is deleted once its instances are gone"
        assert [k["name"] for k in emulator.ssh_keys] == ["emulator-key"], "the cluster's key is deleted"
        assert not private.exists()
        assert s.registry.get(cid).state == "closed"

    run(go())
    text = "\n".join(lines)
    assert "offer: 2 x gpu_1x_a10" in text and "$1.50/h" in text
    assert "booting -> active" in text and "workers joined: 2/2" in text and "confirmed terminated" in text
    assert text.index("offer") < text.index("launching"), "the offer is shown before anything launches"


def test_refusals_in_preflight_write_no_row(emulator: Emulator) -> None:
    """Nothing billable is needed to refuse these, so no registry row is written for them."""
    provider = LambdaProvider()
    emulator.faults.no_capacity = {"gpu_1x_a100", "gpu_1x_a100_sxm4"}
    cases = [
        (_spec(gpu="H100", gpus_per_worker=8), SpecError, r"\$23.92/h.*confirm"),
        (_spec(gpu="A100"), CapacityError, "shapes with capacity now: gpu_1x_a10"),
        (_spec(gpu="B300"), SpecError, "GPU models offered"),
        (_spec(spot=True), SpecError, "no spot"),
        (_spec(image="ubuntu"), SpecError, "no image 'ubuntu'.*families offered: lambda-stack-22-04, ubuntu-22-04"),
        (_spec(workers=0), SpecError, "workers=0 .*still bill the instance"),  # used to launch one billable instance
    ]
    for spec, cls, match in cases:
        with pytest.raises(cls, match=match):
            run(start(spec, provider=provider))
    assert emulator.launches == 0 and Registry().list() == []


def test_missing_key_is_refused_in_preflight(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDA_API_KEY")
    with pytest.raises(CredentialsError, match="LAMBDA_API_KEY"):
        run(start(_spec()))
    assert Registry().list() == [] and emulator.requests == []


def test_invalid_key(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "wrong_key_0000000000000000000000")
    with pytest.raises(CredentialsError, match=r"invalid-api-key.*\*\*\*\*0000"):
        run(start(_spec()))
    assert Registry().list() == []


def test_confirmed_expensive_launch_goes_ahead_in_preflight(emulator: Emulator) -> None:
    async def go() -> None:
        await LambdaProvider().preflight(_spec(gpu="H100", gpus_per_worker=8, options={"confirm": True}))

    run(go())
    assert emulator.launches == 0


def test_capacity_race_at_launch_is_reported(emulator: Emulator) -> None:
    emulator.faults.fail_launch_at = 1  # listed capacity is not reserved
    with pytest.raises(CapacityError, match="insufficient-capacity"):
        run(start(_spec()))
    assert Registry().latest("t").state == "failed"


def test_launch_failing_half_way_terminates_the_head(emulator: Emulator) -> None:
    emulator.faults.fail_launch_at = 2  # head launches, the first worker is refused
    with pytest.raises(CapacityError):
        run(start(_spec(workers=3)))
    assert emulator.launches == 2 and len(emulator.instances) == 1
    assert all(i.status == "terminated" for i in emulator.instances.values())
    assert Registry().latest("t").state == "failed"


def test_launch_answering_500_after_creating_instances_is_reconciled(emulator: Emulator) -> None:
    emulator.faults.launch_500_after_create = True
    with pytest.raises(ProviderError, match="may or may not have been applied"):
        run(start(_spec()))
    assert len(emulator.instances) == 1 and emulator.launches == 1, "a launch is never repeated blindly"
    assert [r.state for r in Registry().resources(provider="lambda") if r.kind == "instance"] == ["terminated"]


def test_bursts_of_429_and_500_are_absorbed(emulator: Emulator) -> None:
    emulator.faults.rate_limit_burst = 2
    emulator.faults.server_errors = 2

    async def go() -> None:
        await close(await start(_spec()))

    run(go())
    statuses = [s for _, _, s in emulator.requests]
    assert statuses[:4] == [429, 429, 500, 500] and statuses[4] == 200


def test_real_rate_limit_429_path(emulator: Emulator) -> None:
    """The emulator enforces a minimum interval the client does not respect: 429s, Retry-After, success."""
    emulator.request_interval = 0.15
    emulator.retry_after = 0.2

    async def go() -> int:
        async with LambdaApi() as api:
            for _ in range(4):
                await api.instance_types()
            return api.client.throttled

    assert run(go()) >= 1
    assert 429 in [s for _, _, s in emulator.requests]


def test_rate_limit_exhausted_is_rate_limited(emulator: Emulator) -> None:
    emulator.faults.rate_limit_burst = 100
    with pytest.raises(RateLimited, match="Wait a minute"):
        run(start(_spec()))
    assert Registry().list() == []


def test_stuck_booting_times_out_and_terminates(emulator: Emulator) -> None:
    emulator.faults.stuck_booting = True
    with dask.config.set({"cumulo.cloud.boot-timeout": 0.5}):
        with pytest.raises(LaunchTimeout, match="still booting"):
            run(start(_spec(workers=2)))
    assert len(emulator.instances) == 1 and not emulator.live()
    assert Registry().latest("t").state == "failed"


def test_terminate_failing_twice_is_retried(emulator: Emulator) -> None:
    async def go() -> None:
        s = await start(_spec())
        emulator.faults.terminate_failures = 2
        await close(s)

    run(go())
    terminates = [s for m, p, s in emulator.requests if p.endswith("/terminate")]
    assert terminates == [500, 500, 200]


def test_terminate_never_confirmed_is_loud_then_a_stop_from_the_row_finishes(emulator: Emulator) -> None:
    async def go() -> str:
        s = await start(_spec())
        emulator.faults.terminate_failures = 100
        with pytest.raises(ProviderError, match="failed 4 times"):
            await close(s)
        assert s.registry.get(s.id).state == "stop-failed", "a row is not closed until termination is confirmed"
        emulator.terminate_seconds = 60  # now Lambda accepts but never finishes terminating
        emulator.faults.terminate_failures = 0
        with dask.config.set({"cumulo.lambda.terminate-timeout": 0.3}):
            with pytest.raises(TerminateError, match=r"may still be billing.*cumulo down"):
                await close(s)  # closing again after a failure works, and fails loudly again
        assert s.registry.get(s.id).state == "stop-failed"
        return s.id

    cid = run(go())
    emulator.terminate_seconds = 0.1
    registry = Registry()
    run(stop_from_row(registry, cid))  # another process (the CLI) finishes the job from the registry alone
    assert registry.get(cid).state == "closed"


def test_quota_error(emulator: Emulator) -> None:
    emulator.max_instances = 1
    with pytest.raises(QuotaError, match="quota"):
        run(start(_spec(workers=3)))


def test_cancelled_launch_terminates_what_launched(emulator: Emulator) -> None:
    """A launch cancelled (e.g. the notebook interrupted) while instances boot cleans up before it ends."""
    emulator.faults.stuck_booting = True

    async def go() -> None:
        task = asyncio.create_task(start(_spec(workers=2)))
        deadline = time.monotonic() + 10
        while not emulator.instances and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    assert len(emulator.instances) == 1 and not emulator.live()


def test_stop_of_a_cluster_never_launched_is_harmless(emulator: Emulator) -> None:
    registry = Registry()
    provider = LambdaProvider()
    record = Lifecycle(registry).begin("never", provider, _spec().to_dict())

    async def go() -> None:
        await provider.stop(record, Lifecycle(registry).checkpoint(record, provider))

    run(go())
    assert not [p for m, p, _ in emulator.requests if m != "GET"], "nothing to terminate, remove or delete"
    Lifecycle(registry).discard(record.id)


# -- fault 15: a key pair per cluster -------------------------------------------------------------


def test_an_account_without_keys_can_launch(emulator: Emulator) -> None:
    emulator.ssh_keys = []

    async def go() -> None:
        s = await start(_spec())
        assert [k["name"] for k in emulator.ssh_keys] == [f"cumulo-{s.registry.installation_id}-{s.id}"]
        keys = [r for r in s.registry.resources(cluster_id=s.id) if r.kind == "ssh-key"]
        assert [(r.state, bool(r.meta.get("lambda_id"))) for r in keys] == [("active", True)]
        await close(s)
        assert emulator.ssh_keys == []
        assert [r.state for r in s.registry.resources(cluster_id=s.id) if r.kind == "ssh-key"] == ["removed"]

    run(go())


def test_a_key_upload_that_may_have_applied_is_found_by_name_at_teardown(emulator: Emulator) -> None:
    """The key is recorded before the upload; a 500 after storing it still ends with the key deleted."""
    emulator.faults.ssh_key_500_after_create = True
    with pytest.raises(ProviderError, match="may or may not have been applied"):
        run(start(_spec()))
    assert [k["name"] for k in emulator.ssh_keys] == ["emulator-key"] and emulator.launches == 0
    row = Registry().latest("t")
    assert row.state == "failed"
    assert [(r.kind, r.state) for r in Registry().resources(cluster_id=row.id)] == [("ssh-key", "removed")]


def test_a_chosen_key_is_used_and_never_deleted(emulator: Emulator) -> None:
    with dask.config.set({"cumulo.lambda.ssh-key-name": "emulator-key"}):
        async def go() -> None:
            s = await start(_spec())
            assert [k["name"] for k in emulator.ssh_keys] == ["emulator-key"]
            assert all(i.ssh_key_names == ["emulator-key"] for i in emulator.live())
            await close(s)

        run(go())
        assert [k["name"] for k in emulator.ssh_keys] == ["emulator-key"]
        with dask.config.set({"cumulo.lambda.ssh-key-name": "no-such-key"}):
            with pytest.raises(SpecError, match="no SSH key of that name.*emulator-key"):
                run(start(_spec(), name="t2"))
    assert not [p for m, p, _ in emulator.requests if m in ("POST", "DELETE") and "ssh-keys" in p]


# -- fault 10: behind NAT ---------------------------------------------------------------------------


def test_behind_nat_is_refused_before_anything_bills(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from cumulo.providers.lambda_cloud import network

    monkeypatch.setattr(network, "outgoing_address", lambda host: "192.168.1.23")
    rules = [dict(r) for r in emulator.firewall]
    with pytest.raises(SpecError, match=r"192.168.1.23 is private.*cumulo.lambda.client-cidr"):
        run(start(_spec()))
    assert emulator.launches == 0 and emulator.firewall == rules and not emulator.rulesets
    assert Registry().list() == []

    async def go() -> None:
        s = await start(_spec())
        assert {r["source_network"] for rs in emulator.rulesets.values() for r in rs["rules"]} \
            == {"198.51.100.20/32"}
        await close(s)

    with dask.config.set({"cumulo.lambda.client-cidr": "198.51.100.20/32"}):
        run(go())


# -- fault 4: an instance Lambda no longer lists ------------------------------------------------------


def test_an_instance_lambda_forgot_does_not_block_the_stop(emulator: Emulator) -> None:
    async def go() -> None:
        s = await start(_spec(workers=2))
        worker = next(i for i in emulator.live() if i.name.endswith("-worker-1"))
        emulator.forget(worker.id)  # terminated elsewhere, and Lambda stopped listing it
        await close(s)
        assert s.registry.get(s.id).state == "closed"
        states = {r.resource_id: r.state for r in s.registry.resources(cluster_id=s.id) if r.kind == "instance"}
        assert states[worker.id] == "terminated"

    run(go())
    terminates = [(s, p) for m, p, s in emulator.requests if p.endswith("/terminate")]
    assert terminates == [(200, "/api/v1/instance-operations/terminate")], "the forgotten id was never sent"


# -- the sweep (faults 1 and 12) ------------------------------------------------------------------


async def _plant(name: str, itype: str = "gpu_1x_a10") -> str:
    async with LambdaApi() as api:
        return (await api.launch(region="us-west-1", instance_type=itype, name=name, ssh_key="emulator-key",
                                 user_data="#!/bin/bash\ntrue\n"))[0]


def test_sweep_terminates_only_this_installations_orphans(emulator: Emulator) -> None:
    registry = Registry()
    mine = f"cumulo-{registry.installation_id}-feedbeef0001-head"
    theirs = "cumulo-0badc0de-feedbeef0002-head"
    legacy = "cumulo-feedbeef0000-head"
    for name, itype in ((mine, "gpu_1x_h100_pcie"), (theirs, "gpu_1x_a10"), (legacy, "gpu_1x_a10"),
                        ("someone-elses-box", "gpu_1x_a10")):
        run(_plant(name, itype))
    emulator.firewall.append({"protocol": "tcp", "port_range": [8786, 8786], "source_network": "127.0.0.1/32",
                              "description": f"cumulo-{registry.installation_id}-feedbeef0001-scheduler-tls"})
    emulator.firewall.append({"protocol": "tcp", "port_range": [8786, 8786], "source_network": "127.0.0.1/32",
                              "description": "cumulo-0badc0de-feedbeef0002-scheduler-tls"})
    provider = LambdaProvider()

    found = run(provider.sweep_orphans(registry, dry_run=True))
    by_name = {o.name: o for o in found if o.kind == "instance"}
    assert set(by_name) == {mine, theirs, legacy}, "instances without the cumulo prefix are not even listed"
    assert by_name[mine].action == "would terminate" and by_name[mine].ours
    assert by_name[mine].price_per_hour == 2.49 and "unknown to this registry" in by_name[mine].line()
    assert by_name[theirs].action == "reported" and not by_name[theirs].ours
    assert "another cumulo installation" in by_name[theirs].reason and "$0.75/h" in by_name[theirs].line()
    assert by_name[legacy].action == "reported"
    assert len(emulator.live()) == 4, "a dry run terminates nothing"

    found = run(provider.sweep_orphans(registry, dry_run=False))
    assert {o.name: o.action for o in found if o.kind == "instance"} == {
        mine: "terminated", theirs: "reported", legacy: "reported"}
    assert sorted(i.name for i in emulator.live()) == sorted([theirs, legacy, "someone-elses-box"])
    assert [r["description"] for r in emulator.firewall if r["description"].startswith("cumulo-")] == \
        ["cumulo-0badc0de-feedbeef0002-scheduler-tls"], "only this installation's stale rule is removed"

    found = run(provider.sweep_orphans(registry, dry_run=False, terminate_unknown=True))
    assert {o.name: o.action for o in found if o.kind == "instance"} == {theirs: "terminated", legacy: "terminated"}
    assert [i.name for i in emulator.live()] == ["someone-elses-box"], "never an instance without the prefix"
    # clean up what cumulo must not touch, so that the orphan check passes
    emulator.firewall = [r for r in emulator.firewall if not r["description"].startswith("cumulo-")]
    emulator.handle("POST", "/api/v1/instance-operations/terminate", f"Bearer {emulator.api_key}",
                    {"instance_ids": [emulator.live()[0].id]})
    assert emulator.wait_idle(10)


def test_sweep_leaves_open_clusters_alone_even_without_their_kernel(emulator: Emulator) -> None:
    """Fault 12: a keep-alive cluster whose kernel exited was killed by the old orphan sweep."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    async def go() -> None:
        s = await start(_spec())
        s.registry.update(s.id, owner_pid=dead.pid, heartbeat=time.time() - 86400)  # owner gone, lease stale
        found = await s.provider.sweep_orphans(s.registry, dry_run=False, terminate_unknown=True)
        assert found == []
        assert len(emulator.live()) == 1 and s.registry.get(s.id).state == "running"
        await close(s)

    run(go())


def test_sweep_terminates_a_closed_rows_running_instance(emulator: Emulator) -> None:
    async def go() -> None:
        s = await start(_spec())
        await close(s)
        iid = await _plant(f"cumulo-{s.registry.installation_id}-{s.id}-head")  # e.g. a launch that landed late
        found = await s.provider.sweep_orphans(s.registry, dry_run=False)
        assert [(o.resource_id, o.action) for o in found] == [(iid, "terminated")]
        assert f"{s.record.name!r} is closed" in found[0].reason
        assert not emulator.live()

    run(go())


def test_kernel_killed_mid_launch_is_stopped_from_its_row(emulator: Emulator, tmp_path: Path) -> None:
    """SIGKILL while the launch request is in flight: the id was never recorded, the name is enough."""
    emulator.faults.launch_delay = 20
    proc = subprocess.Popen([sys.executable, "-c", KILLED_LAUNCH, json.dumps(fast_config(emulator, tmp_path)),
                             "doomed"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
    try:
        cid = proc.stdout.readline().strip()  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while not emulator.instances and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emulator.instances, "the launch never reached the emulator"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    registry = Registry()
    assert registry.get(cid).state == "starting"
    assert not [r for r in registry.resources(cluster_id=cid) if r.kind == "instance"], "killed before recording"
    assert [r.kind for r in registry.resources(cluster_id=cid) if r.state == "requested"] == ["launch"]
    emulator.faults.launch_delay = 0
    provider = LambdaProvider()
    assert run(provider.sweep_orphans(registry, dry_run=False)) == [], "an open row is the reaper's, not the sweep's"
    run(stop_from_row(registry, cid, provider))  # what the reaper does for an expired row
    assert registry.get(cid).state == "closed"
    adopted = [r for r in registry.resources(cluster_id=cid) if r.kind == "instance"]
    assert [(r.state, r.meta.get("adopted")) for r in adopted] == [("terminated", True)]
    assert not emulator.live()


def test_cumulo_reap_sweeps_orphaned_instances(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    from cumulo.cli import main

    name = f"cumulo-{Registry().installation_id}-0badc0ffee00-head"
    run(_plant(name))
    assert main(["reap", "--dry-run"]) == 0
    assert "would terminate" in capsys.readouterr().out and len(emulator.live()) == 1
    assert main(["reap"]) == 0
    out = capsys.readouterr().out
    assert "terminated" in out and name in out and "$0.75/h" in out
    assert emulator.wait_idle(10) and emulator.live() == []
    assert emulator.api_key not in out
