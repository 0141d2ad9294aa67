"""Fixtures for the Azure provider tests: the ARM emulator per test, config pointing at it, and the invariants.

Import the fixtures into a test module (``from .azure_support import arm, no_azure_leftovers``);
``no_azure_leftovers`` is autouse there: after every test the emulator must hold
no VM and no resource group of cumulo's, no VM process may still run, and every
instance the registry knows must be recorded as terminated (or preempted: evicted, seen gone).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from cumulo.life.registry import Registry

from .azure_emulator import ArmEmulator


def fast_config(tmp_path: Path, endpoint: str, metadata: str = "http://127.0.0.1:9") -> dict[str, Any]:
    """cumulo.azure.* and cumulo.cloud.* for tests: the emulator (ARM, and the VMs' metadata service),
    short intervals, CPU workers, no installs."""
    return {
        "cumulo.azure.arm-endpoint": endpoint,
        "cumulo.azure.metadata-endpoint": metadata,
        "cumulo.azure.credential": "static-token",
        "cumulo.azure.poll-interval": 0.05,
        "cumulo.azure.terminate-timeout": 15,
        "cumulo.azure.retry-total": 4,
        "cumulo.azure.read-timeout": 5,
        "cumulo.azure.connection-timeout": 3,
        "cumulo.azure.certs-dir": str(tmp_path / "certs"),
        "cumulo.catalog.cache-path": str(tmp_path / "prices-cache.json"),  # the bundled prices, not this machine's
        "cumulo.cloud.boot-timeout": 20,
        "cumulo.cloud.scheduler-timeout": 30,
        "cumulo.cloud.workers-timeout": 40,
        "cumulo.cloud.worker-command": "dask worker",
        "cumulo.cloud.worker-args": "--nthreads 1 --no-dashboard --memory-limit 0",
        "cumulo.cloud.gpu-probe": False,
        "cumulo.cloud.install-packages": False,
        "cumulo.cloud.print-progress": False,
    }


@pytest.fixture
def arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArmEmulator]:
    """A running ARM emulator, the SDK's trust and the static token pointing at it, fast config."""
    emu = ArmEmulator().start()
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    try:
        with dask.config.set(fast_config(tmp_path, emu.endpoint, emu.metadata.endpoint)):
            yield emu
    finally:
        emu.close()


@pytest.fixture(autouse=True)
def no_azure_leftovers(arm: ArmEmulator) -> Iterator[None]:
    """After each test: nothing left billing at the emulator, and the registry agrees."""
    yield
    arm.wait_idle(timeout=5)
    live = [v.id for v in arm.live() if v.booted_at >= 0]
    groups = arm.running_process_groups()
    not_terminated = [(r.resource_id, r.state) for r in Registry().resources(provider="azure")
                      if r.kind == "instance" and r.state not in ("terminated", "preempted")]
    assert not live, f"VMs left at the emulator: {live}"
    assert not groups, f"VM processes still running: {groups}"
    assert not not_terminated, f"registry holds instances not recorded as terminated: {not_terminated}"
    assert not arm.cumulo_groups(), f"cumulo resource groups left: {arm.cumulo_groups()}"
