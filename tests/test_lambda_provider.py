"""The Lambda provider against the emulator: real dask processes over TLS, every fault mode, nothing orphaned."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from cumulo.exceptions import (
    CapacityError, CredentialsError, LaunchTimeout, QuotaError, RateLimited, SpecError, TerminateError,
)
from cumulo.providers.lambda_cloud import LambdaProvider, find_orphans, reap_orphans, teardown
from cumulo.providers.lambda_api import LambdaApi
from cumulo.registry import Registry
from cumulo.spec import ClusterSpec

from .lambda_emulator import Emulator
from .lambda_support import emulator, fast_config, no_orphans, run  # noqa: F401  (fixtures)


def _start(spec: ClusterSpec) -> tuple[Registry, str]:
    registry = Registry()
    record = registry.create("t", "lambda", spec.to_dict())
    return registry, record.id


async def _launch(spec: ClusterSpec, lines: list[str] | None = None):  # type: ignore[no-untyped-def]
    registry, cid = _start(spec)
    dep = await LambdaProvider().launch(spec, cluster_id=cid, registry=registry,
                                        progress=None if lines is None else lines.append)
    return registry, cid, dep


def test_launch_compute_close_over_tls(emulator: Emulator) -> None:
    lines: list[str] = []

    async def go() -> None:
        registry, cid, dep = await _launch(ClusterSpec(provider="lambda", gpu="A10", workers=2), lines)
        assert dep.address.startswith("tls://127.")
        assert dep.rate_per_hour == pytest.approx(1.50)
        assert dep.security.require_encryption
        rule = [r for r in emulator.firewall if r["description"].startswith("cumulo-")]
        assert rule == [{"protocol": "tcp", "port_range": [8786, 8786], "source_network": "127.0.0.1/32",
                         "description": f"cumulo-{cid}-scheduler-tls"}]
        names = sorted(i.name for i in emulator.live())
        assert names == [f"cumulo-{cid}-head", f"cumulo-{cid}-workers"]
        recorded = {r.resource_id for r in registry.resources(cluster_id=cid) if r.kind == "instance"}
        assert recorded == {i.id for i in emulator.live()}
        async with Client(dep.address, security=dep.security, asynchronous=True) as client:
            assert await client.submit(sum, [1, 2, 3]) == 6
            hosts = {w["host"] for w in (await client.scheduler.identity())["workers"].values()}
            assert len(hosts) == 2
        # plain tcp to the TLS scheduler is refused
        with pytest.raises((OSError, asyncio.TimeoutError)):
            await asyncio.wait_for(Client(dep.address.replace("tls://", "tcp://"), asynchronous=True, timeout=2), 5)
        await dep.close()
        assert not emulator.live()
        assert not [r for r in emulator.firewall if r["description"].startswith("cumulo-")]
        assert registry.get(cid).rate_per_hour == pytest.approx(1.50)

    run(go())
    text = "\n".join(lines)
    assert "offer: 2 x gpu_1x_a10" in text and "$1.50/h" in text
    assert "booting -> active" in text and "workers joined: 2/2" in text and "confirmed terminated" in text
    assert text.index("offer") < text.index("launching"), "the offer is shown before anything launches"


def test_confirmation_needed_above_threshold(emulator: Emulator) -> None:
    spec = ClusterSpec(provider="lambda", gpu="H100", gpus_per_worker=8, workers=1)
    with pytest.raises(SpecError, match=r"\$23.92/h.*confirm"):
        run(_launch(spec))
    assert emulator.launches == 0


def test_no_capacity_names_alternatives_and_launches_nothing(emulator: Emulator) -> None:
    emulator.faults.no_capacity = {"gpu_1x_a100", "gpu_1x_a100_sxm4"}
    with pytest.raises(CapacityError, match="shapes with capacity now: gpu_1x_a10"):
        run(_launch(ClusterSpec(provider="lambda", gpu="A100", workers=1)))
    assert emulator.launches == 0


def test_capacity_race_at_launch_is_reported(emulator: Emulator) -> None:
    emulator.faults.fail_launch_at = 1  # listed capacity is not reserved
    with pytest.raises(CapacityError, match="insufficient-capacity"):
        run(_launch(ClusterSpec(provider="lambda", gpu="A10", workers=1)))


def test_launch_failing_half_way_terminates_the_head(emulator: Emulator) -> None:
    emulator.faults.fail_launch_at = 2  # head launches, workers are refused
    with pytest.raises(CapacityError):
        run(_launch(ClusterSpec(provider="lambda", gpu="A10", workers=3)))
    assert emulator.launches == 2 and len(emulator.instances) == 1
    assert all(i.status == "terminated" for i in emulator.instances.values())


def test_launch_answering_500_after_creating_instances_is_reconciled(emulator: Emulator) -> None:
    emulator.faults.launch_500_after_create = True
    with pytest.raises(Exception, match="may or may not have been applied"):
        run(_launch(ClusterSpec(provider="lambda", gpu="A10", workers=1)))
    assert len(emulator.instances) == 1 and emulator.launches == 1, "a launch is never repeated blindly"
    registry = Registry()
    assert [r.state for r in registry.resources(provider="lambda") if r.kind == "instance"] == ["terminated"]


def test_bursts_of_429_and_500_are_absorbed(emulator: Emulator) -> None:
    emulator.faults.rate_limit_burst = 2
    emulator.faults.server_errors = 2

    async def go() -> None:
        _, _, dep = await _launch(ClusterSpec(provider="lambda", gpu="A10", workers=1))
        await dep.close()

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
        run(_launch(ClusterSpec(provider="lambda", gpu="A10", workers=1)))


def test_stuck_booting_times_out_and_terminates(emulator: Emulator) -> None:
    import dask

    emulator.faults.stuck_booting = True
    with dask.config.set({"cumulo.lambda.boot-timeout": 0.5}):
        with pytest.raises(LaunchTimeout, match="still booting"):
            run(_launch(ClusterSpec(provider="lambda", gpu="A10", workers=2)))
    assert len(emulator.instances) == 1 and not emulator.live()


def test_terminate_failing_twice_is_retried(emulator: Emulator) -> None:
    async def go() -> None:
        _, _, dep = await _launch(ClusterSpec(provider="lambda", gpu="A10", workers=1))
        emulator.faults.terminate_failures = 2
        await dep.close()

    run(go())
    terminates = [s for m, p, s in emulator.requests if p.endswith("/terminate")]
    assert terminates == [500, 500, 200]


def test_terminate_never_confirmed_is_loud_then_reap_finishes(emulator: Emulator) -> None:
    import dask

    async def go() -> str:
        registry, cid, dep = await _launch(ClusterSpec(provider="lambda", gpu="A10", workers=1))
        emulator.faults.terminate_failures = 100
        with pytest.raises(Exception, match="failed 4 times"):
            await dep.close()
        assert registry.get(cid).is_open, "a row is not closed until termination is confirmed"
        emulator.terminate_seconds = 60  # now Lambda accepts but never finishes terminating
        emulator.faults.terminate_failures = 0
        with dask.config.set({"cumulo.lambda.terminate-timeout": 0.3}):
            with pytest.raises(TerminateError, match=r"may still be billing.*cumulo reap"):
                await dep.close()  # closing again after a failure works, and fails loudly again
        return cid

    cid = run(go())
    registry = Registry()
    emulator.terminate_seconds = 0.1
    # another process (the CLI) finishes the job from the registry alone
    run(LambdaProvider().stop(registry.get(cid), registry))
    registry.close(cid)


def test_quota_error(emulator: Emulator) -> None:
    emulator.max_instances = 1
    with pytest.raises(QuotaError, match="quota"):
        run(_launch(ClusterSpec(provider="lambda", gpu="A10", workers=3)))


def test_reap_finds_unknown_instances_with_their_cost(emulator: Emulator) -> None:
    async def plant() -> None:
        async with LambdaApi() as api:
            await api.launch(region="us-west-1", instance_type="gpu_1x_h100_pcie", name="cumulo-feedbeef0000-head",
                             quantity=1, ssh_key="emulator-key", user_data="#!/bin/bash\ntrue\n")
            await api.launch(region="us-west-1", instance_type="gpu_1x_a10", name="someone-elses-box",
                             quantity=1, ssh_key="emulator-key", user_data="")

    run(plant())
    found = reap_orphans(dry_run=True)
    assert [(o.name, o.price_per_hour) for o in found] == [("cumulo-feedbeef0000-head", 2.49)]
    assert "unknown to this registry" in found[0].line() and "$2.49/h" in found[0].line()
    assert len(emulator.live()) == 2, "dry run terminates nothing"
    reap_orphans(dry_run=False)
    live = emulator.live()
    assert [i.name for i in live] == ["someone-elses-box"], "never touch instances without the cumulo prefix"
    # clean the foreign box up ourselves so that the orphan check passes
    emulator.handle("POST", "/api/v1/instance-operations/terminate", f"Bearer {emulator.api_key}",
                    {"instance_ids": [live[0].id]})
    assert emulator.wait_idle(10)


def test_cumulo_reap_sweeps_orphaned_instances(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    from cumulo.cli import main

    async def plant() -> None:
        async with LambdaApi() as api:
            await api.launch(region="us-west-1", instance_type="gpu_1x_a10", name="cumulo-0badc0ffee00-head",
                             quantity=1, ssh_key="emulator-key", user_data="#!/bin/bash\ntrue\n")

    run(plant())
    assert main(["reap", "--dry-run"]) == 0
    assert "would terminate" in capsys.readouterr().out and len(emulator.live()) == 1
    assert main(["reap"]) == 0
    out = capsys.readouterr().out
    assert "terminated" in out and "cumulo-0badc0ffee00-head" in out and "$0.75/h" in out
    assert emulator.wait_idle(10) and emulator.live() == []
    assert emulator.api_key not in out


_KILLED_LAUNCH = """
import asyncio, json, sys
import dask
from cumulo.providers.lambda_cloud import LambdaProvider
from cumulo.registry import Registry
from cumulo.spec import ClusterSpec
dask.config.set(json.loads(sys.argv[1]))
spec = ClusterSpec(provider="lambda", gpu="A10", workers=2)
registry = Registry()
record = registry.create("doomed", "lambda", spec.to_dict())
print(record.id, flush=True)
asyncio.run(LambdaProvider().launch(spec, cluster_id=record.id, registry=registry))
"""


def test_kernel_killed_mid_launch_is_reaped(emulator: Emulator, tmp_path: Path) -> None:
    """SIGKILL while the launch request is in flight: the ids were never recorded, the name is enough."""
    emulator.faults.launch_delay = 20
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_LAUNCH, json.dumps(fast_config(emulator, tmp_path))],
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
    emulator.faults.launch_delay = 0
    found = reap_orphans(dry_run=True)
    assert [o.cluster_id for o in found] == [cid] and "lost its owner" in found[0].reason
    assert found[0].running_since is not None, "the launch request was recorded before it was sent"
    reap_orphans(dry_run=False)
    assert registry.get(cid).state == "lost"
    assert not emulator.live()


def test_live_cluster_is_not_an_orphan(emulator: Emulator) -> None:
    async def go() -> None:
        registry, cid, dep = await _launch(ClusterSpec(provider="lambda", gpu="A10", workers=1))
        try:
            async with LambdaApi() as api:
                assert await find_orphans(registry, api) == []
        finally:
            await dep.close()

    run(go())


def test_teardown_of_a_cluster_never_launched_is_harmless(emulator: Emulator) -> None:
    registry, cid = _start(ClusterSpec(provider="lambda", gpu="A10"))

    async def go() -> None:
        async with LambdaApi() as api:
            await teardown(api, registry, cid)

    run(go())


def test_invalid_key(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "wrong_key_0000000000000000000000")
    with pytest.raises(CredentialsError, match=r"invalid-api-key.*\*\*\*\*0000"):
        run(_launch(ClusterSpec(provider="lambda", gpu="A10", workers=1)))


def test_cancelled_launch_terminates_what_launched(emulator: Emulator) -> None:
    """A launch cancelled (e.g. the notebook interrupted) while instances boot cleans up before it ends."""
    emulator.faults.stuck_booting = True
    spec = ClusterSpec(provider="lambda", gpu="A10", workers=2)

    async def go() -> None:
        registry, cid = _start(spec)
        task = asyncio.create_task(LambdaProvider().launch(spec, cluster_id=cid, registry=registry))
        deadline = time.monotonic() + 10
        while not emulator.instances and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    assert len(emulator.instances) == 1 and not emulator.live()


def test_progress_callback_from_the_constructor(emulator: Emulator) -> None:
    lines: list[str] = []
    spec = ClusterSpec(provider="lambda", gpu="A10", workers=1)

    async def go() -> None:
        registry, cid = _start(spec)
        dep = await LambdaProvider(progress=lines.append).launch(spec, cluster_id=cid, registry=registry)
        await dep.close()

    run(go())
    assert lines[0].startswith("offer: 1 x gpu_1x_a10") and lines[-1].startswith("firewall: removed")
