"""Fixtures for the Lambda provider tests: an emulator per test, config pointing at it, orphan checks.

Import the fixtures into a test module (``from .lambda_support import ...``);
``no_orphans`` is autouse there: after every test the emulator must hold no
instance that is not terminated, no instance process may still run, and every
instance the registry knows must be recorded as terminated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest

from cumulo.registry import Registry

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
        "cumulo.lambda.boot-timeout": 20,
        "cumulo.lambda.scheduler-timeout": 30,
        "cumulo.lambda.workers-timeout": 40,
        "cumulo.lambda.terminate-timeout": 15,
        "cumulo.lambda.worker-command": "dask worker",
        "cumulo.lambda.worker-args": "--nthreads 1 --no-dashboard --memory-limit 0",
        "cumulo.lambda.gpu-probe": False,
        "cumulo.lambda.install-packages": False,
        "cumulo.lambda.certs-dir": str(tmp_path / "certs"),
        "cumulo.lambda.print-progress": False,
        "cumulo.lambda.api-key-file": str(tmp_path / "no-such-key-file"),
    }


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A running emulator, LAMBDA_API_KEY set to its key, and cumulo.lambda.* pointing at it."""
    emu = Emulator().start()
    monkeypatch.setenv("LAMBDA_API_KEY", emu.api_key)
    try:
        with dask.config.set(fast_config(emu, tmp_path)):
            yield emu
    finally:
        emu.close()


def run(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def no_orphans(emulator: Emulator) -> Iterator[None]:
    """After each test: nothing left billing at the emulator, and the registry agrees."""
    yield
    live = [(i.id, i.name, i.status) for i in emulator.live()]
    groups = emulator.running_process_groups()
    registry = Registry()
    not_terminated = [(r.resource_id, r.state) for r in registry.resources(provider="lambda")
                      if r.kind == "instance" and r.state != "terminated"]
    known = {r.resource_id for r in registry.resources(provider="lambda") if r.kind == "instance"}
    unrecorded = [i for i in emulator.instances if i not in known and emulator.instances[i].name.startswith("cumulo-")
                  and any(r.resource_id == emulator.instances[i].name for r in registry.resources(provider="lambda"))]
    assert not live, f"instances left running at the emulator: {live}"
    assert not groups, f"instance processes still running: {groups}"
    assert not not_terminated, f"registry holds instances not recorded as terminated: {not_terminated}"
    assert not unrecorded, f"instances launched by a recorded request but never recorded: {unrecorded}"
