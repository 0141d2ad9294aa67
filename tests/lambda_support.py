"""Fixtures for the Lambda provider tests: an emulator per test, config pointing at it, and the invariants.

Import the fixtures into a test module (``from .lambda_support import ...``);
``no_orphans`` is autouse there: after every test the emulator must hold no
instance that is not terminated, no instance process may still run, no
cumulo firewall rule or SSH key may be left on the account, and every
instance the registry knows must be recorded as terminated.

:func:`start` and :func:`close` drive the provider the way connect() and
close() do, through cumulo.life.lifecycle (preflight, then a ``starting`` row, a
checkpoint, launch; on failure the lifecycle's abandon), so that provider
tests need no cluster object. :func:`check_agreement` is the invariant the
fault matrix checks after each fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import pytest

from cumulo.life.checkpoint import Checkpoint
from cumulo.life.lifecycle import Lifecycle
from cumulo.providers.base import Deployment
from cumulo.providers.lambda_cloud import LambdaProvider
from cumulo.life.registry import ClusterRecord, Registry
from cumulo.spec import ClusterSpec

from .lambda_emulator import Emulator


def fast_config(emu: Emulator, tmp_path: Path) -> dict[str, Any]:
    """cumulo.lambda.* settings for tests: the emulator's URL, short intervals, CPU workers, no GPU probe."""
    return {
        "cumulo.lambda.base-url": emu.base_url,
        "cumulo.lambda.request-interval": 0.0,
        "cumulo.lambda.launch-interval": 0.0,
        "cumulo.lambda.poll-interval": 0.05,
        "cumulo.lambda.max-retries": 3,
        "cumulo.lambda.request-timeout": 5,
        "cumulo.cloud.boot-timeout": 20,
        "cumulo.cloud.scheduler-timeout": 30,
        "cumulo.cloud.workers-timeout": 40,
        "cumulo.lambda.terminate-timeout": 15,
        "cumulo.cloud.worker-command": "dask worker",
        "cumulo.cloud.worker-args": "--nthreads 1 --no-dashboard --memory-limit 0",
        "cumulo.cloud.gpu-probe": False,
        "cumulo.cloud.install-packages": False,
        "cumulo.lambda.certs-dir": str(tmp_path / "certs"),
        "cumulo.cloud.print-progress": False,
        "cumulo.lambda.api-key-file": str(tmp_path / "no-such-key-file"),
    }


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A running emulator, LAMBDA_API_KEY set to its key, and cumulo.lambda.* pointing at it.

    Its instances are a prepared image (the test's Python, packages install off): the environment
    sync is tested on bare instances in test_lambda_env.py."""
    emu = Emulator(image="prepared").start()
    monkeypatch.setenv("LAMBDA_API_KEY", emu.api_key)
    try:
        with dask.config.set(fast_config(emu, tmp_path)):
            yield emu
    finally:
        emu.close()


def run(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


@dataclass
class Started:
    """A Lambda cluster started through the lifecycle, as connect() would."""

    registry: Registry
    record: ClusterRecord
    checkpoint: Checkpoint
    provider: LambdaProvider
    deployment: Deployment

    @property
    def id(self) -> str:
        return self.record.id


async def start(spec: ClusterSpec, *, provider: LambdaProvider | None = None, registry: Registry | None = None,
                name: str = "t") -> Started:
    """preflight -> begin (row) -> checkpoint -> launch; a failed launch is abandoned by the lifecycle and re-raised."""
    provider = provider or LambdaProvider()
    registry = registry or Registry()
    life = Lifecycle(registry)
    await provider.preflight(spec)
    record = life.begin(name, provider, spec.to_dict())
    checkpoint = life.checkpoint(record, provider)
    try:
        deployment = await provider.launch(spec, cluster_id=record.id, checkpoint=checkpoint)
    except BaseException as exc:
        await life.abandon(record, provider, exc, checkpoint=checkpoint)
        raise
    life.running(record.id)
    return Started(registry, record, checkpoint, provider, deployment)


async def close(started: Started, *, why: str = "closed by the test") -> None:
    """Stop through the lifecycle with the owner's deployment (the row closes only on a confirmed stop)."""
    await Lifecycle(started.registry).stop(started.registry.get(started.id), started.provider, why=why,
                                           deployment=started.deployment)


async def stop_from_row(registry: Registry, cluster_id: str, provider: LambdaProvider | None = None) -> None:
    """Stop as another process would (`cumulo down`): the row and its recorded resources only."""
    provider = provider or LambdaProvider()
    await Lifecycle(registry).stop(registry.get(cluster_id), provider, why="cumulo down")


def check_agreement(emu: Emulator, registries: Iterable[Registry]) -> None:
    """The emulator, its firewall and SSH keys, and the registries' resources agree; nothing bills unseen.

    - every instance Lambda lists as not terminated is recorded in an *open* row of some registry;
    - every instance a registry records as terminated is terminating or terminated at Lambda (or unlisted);
    - every cumulo firewall rule and SSH key on the account belongs to an open row.
    """
    registries = list(registries)
    open_rows = {r.id for reg in registries for r in reg.list(include_closed=False)}
    resources = [r for reg in registries for r in reg.resources(provider="lambda")]
    open_instances = {r.resource_id for r in resources if r.kind == "instance" and r.cluster_id in open_rows}
    for inst in emu.listed():
        if inst.status != "terminated":
            assert inst.id in open_instances, f"{inst.name} ({inst.id}, {inst.status}) bills unseen"
    listed = {i.id: i for i in emu.listed()}
    for r in resources:
        if r.kind == "instance" and r.state == "terminated" and r.resource_id in listed:
            assert listed[r.resource_id].status in ("terminating", "terminated"), \
                f"recorded terminated but {listed[r.resource_id].status}: {r.resource_id}"
    open_names = {r.resource_id for r in resources if r.cluster_id in open_rows}
    for rule in emu.firewall:
        desc = str(rule.get("description") or "")
        if desc.startswith("cumulo-"):
            assert desc in open_names, f"firewall rule {desc} of no open cluster"
    for key in emu.ssh_keys:
        if key["name"].startswith("cumulo-"):
            assert key["name"] in open_names, f"ssh key {key['name']} of no open cluster"


@pytest.fixture(autouse=True)
def no_orphans(emulator: Emulator) -> Iterator[None]:
    """After each test: nothing left billing at the emulator or on its account, and the registry agrees."""
    yield
    live = [(i.id, i.name, i.status) for i in emulator.live()]
    groups = emulator.running_process_groups()
    registry = Registry()
    not_terminated = [(r.resource_id, r.state) for r in registry.resources(provider="lambda")
                      if r.kind == "instance" and r.state != "terminated"]
    known = {r.resource_id for r in registry.resources(provider="lambda") if r.kind == "instance"}
    launches = {r.resource_id for r in registry.resources(provider="lambda") if r.kind == "launch"}
    unrecorded = [i for i, inst in emulator.instances.items() if i not in known and inst.name in launches]
    rules = [r["description"] for r in emulator.firewall if str(r.get("description")).startswith("cumulo-")]
    keys = [k["name"] for k in emulator.ssh_keys if k["name"].startswith("cumulo-")]
    assert not live, f"instances left running at the emulator: {live}"
    assert not groups, f"instance processes still running: {groups}"
    assert not not_terminated, f"registry holds instances not recorded as terminated: {not_terminated}"
    assert not unrecorded, f"instances launched by a recorded request but never recorded: {unrecorded}"
    assert not rules, f"cumulo firewall rules left on the account: {rules}"
    assert not keys, f"cumulo ssh keys left on the account: {keys}"


#: A kernel that launches a 2-worker cluster named argv[2] with config argv[1], printing the row id first:
#: tests SIGKILL it part way through the launch.
KILLED_LAUNCH = """
import asyncio, json, sys
import dask
from cumulo.life.lifecycle import Lifecycle
from cumulo.providers.lambda_cloud import LambdaProvider
from cumulo.life.registry import Registry
from cumulo.spec import ClusterSpec
dask.config.set(json.loads(sys.argv[1]))
spec = ClusterSpec(provider="lambda", gpu="A10", workers=2)
provider = LambdaProvider()
life = Lifecycle(Registry())
async def main():
    await provider.preflight(spec)
    record = life.begin(sys.argv[2], provider, spec.to_dict())
    print(record.id, flush=True)
    await provider.launch(spec, cluster_id=record.id, checkpoint=life.checkpoint(record, provider))
asyncio.run(main())
"""
