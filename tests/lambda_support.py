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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import pytest
from cumulo.life.registry import Registry
from cumulo.providers.lambda_cloud import LambdaProvider
from cumulo.spec import ClusterSpec

from . import cloud_support
from .cloud_support import Started, close  # noqa: F401  (re-exported for the Lambda tests)
from .lambda_emulator import Emulator


def fast_config(emu: Emulator, tmp_path: Path) -> dict[str, Any]:
    """cumulo.lambda.* settings for tests: the emulator's URL, short intervals, CPU workers, no GPU probe."""
    return {
        "cumulo.lambda.base-url": emu.base_url,
        "cumulo.lambda.request-interval": 0.0,
        "cumulo.lambda.launch-interval": 0.0,
        "cumulo.lambda.launches-per-minute": 0,
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


@contextmanager
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[Emulator]:
    """A running emulator of a prepared image (``options``: the Emulator's), LAMBDA_API_KEY set to its key, and
    cumulo.lambda.* pointing at it; closed (every instance killed) on the way out."""
    emu = Emulator(image="prepared", **options).start()
    monkeypatch.setenv("LAMBDA_API_KEY", emu.api_key)
    try:
        with dask.config.set(fast_config(emu, tmp_path)):
            yield emu
    finally:
        emu.close()


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A running emulator (:func:`serving`).

    Its instances are a prepared image (the test's Python, packages install off): the environment
    sync is tested on bare instances in test_lambda_env.py."""
    with serving(tmp_path, monkeypatch) as emu:
        yield emu


def run(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


async def start(spec: ClusterSpec, *, provider: LambdaProvider | None = None, registry: Registry | None = None,
                name: str = "t") -> Started:
    """cloud_support.start with a LambdaProvider unless one is given."""
    return await cloud_support.start(spec, provider=provider or LambdaProvider(), registry=registry, name=name)


async def stop_from_row(registry: Registry, cluster_id: str, provider: LambdaProvider | None = None) -> None:
    """Stop as `cumulo down` would, with a LambdaProvider unless one is given."""
    await cloud_support.stop_from_row(registry, cluster_id, provider or LambdaProvider())


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
    for name in emu.cumulo_rulesets():
        assert name in open_names, f"firewall ruleset {name} of no open cluster"
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
                      if r.kind == "instance" and r.state not in ("terminated", "preempted")]
    known = {r.resource_id for r in registry.resources(provider="lambda") if r.kind == "instance"}
    launches = {r.resource_id for r in registry.resources(provider="lambda") if r.kind == "launch"}
    unrecorded = [i for i, inst in emulator.instances.items() if i not in known and inst.name in launches]
    rules = [r["description"] for r in emulator.firewall if str(r.get("description")).startswith("cumulo-")]
    rules += emulator.cumulo_rulesets()
    keys = [k["name"] for k in emulator.ssh_keys if k["name"].startswith("cumulo-")]
    assert not live, f"instances left running at the emulator: {live}"
    assert not groups, f"instance processes still running: {groups}"
    assert not not_terminated, f"registry holds instances not recorded as terminated: {not_terminated}"
    assert not unrecorded, f"instances launched by a recorded request but never recorded: {unrecorded}"
    assert not rules, f"cumulo firewall rules left on the account: {rules}"
    assert not keys, f"cumulo ssh keys left on the account: {keys}"


#: A kernel that launches a 2-worker Lambda cluster: tests SIGKILL it part way through the launch.
KILLED_LAUNCH = cloud_support.killed_launch("lambda", "LambdaProvider", gpu="A10")
