"""Fixtures for the AWS provider tests: the EC2 emulator per test, config pointing at it, and the invariants.

Import the fixtures into a test module (``from .aws_support import aws, no_aws_leftovers``);
``no_aws_leftovers`` is autouse there: after every test the emulator must
hold no instance that is not terminated, no instance process may still run,
no cumulo security group or key pair may be left, and every instance the
registry knows must be recorded as terminated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import pytest
from cumulo.life.registry import Registry
from s3fs import S3FileSystem

from .aws_emulator import AwsEmulator


def fast_config(tmp_path: Path) -> dict[str, Any]:
    """cumulo.aws.* and cumulo.cloud.* for tests: short intervals, CPU workers, no GPU probe, no installs."""
    return {
        "cumulo.aws.poll-interval": 0.05,
        "cumulo.aws.terminate-timeout": 15,
        "cumulo.aws.max-attempts": 4,
        "cumulo.aws.read-timeout": 3,
        "cumulo.aws.connect-timeout": 3,
        "cumulo.aws.certs-dir": str(tmp_path / "certs"),
        "cumulo.cloud.boot-timeout": 20,
        "cumulo.cloud.scheduler-timeout": 30,
        "cumulo.cloud.workers-timeout": 40,
        "cumulo.cloud.worker-command": "dask worker",
        "cumulo.cloud.worker-args": "--nthreads 1 --no-dashboard --memory-limit 0",
        "cumulo.cloud.gpu-probe": False,
        "cumulo.cloud.install-packages": False,
        "cumulo.cloud.print-progress": False,
    }


#: Spot prices the tests state ($/h; on-demand g5.xlarge is 1.006 in the catalog).
SPOT_PRICES = {"g5.xlarge": {"us-east-1a": 0.45, "us-east-1b": 0.38, "us-east-1c": 0.41}}


@contextmanager
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[AwsEmulator]:
    """A running EC2 emulator (``options``: the AwsEmulator's), boto3's endpoint and (made-up) credentials
    pointing at it, fast config; closed (every instance killed) on the way out."""
    emu = AwsEmulator(**options).start()
    # s3fs keeps one file system per set of arguments for the life of the process, bound to the endpoint it
    # found first; each emulator has an endpoint of its own, so the notebook's (this process's) must go
    S3FileSystem.clear_instance_cache()
    emu.spot_prices = {k: dict(v) for k, v in SPOT_PRICES.items()}
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    try:
        with dask.config.set(fast_config(tmp_path)):
            yield emu
    finally:
        emu.close()


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEmulator]:
    """A running EC2 emulator (:func:`serving`)."""
    with serving(tmp_path, monkeypatch) as emu:
        yield emu


@pytest.fixture(autouse=True)
def no_aws_leftovers(aws: AwsEmulator) -> Iterator[None]:
    """After each test: nothing left billing at the emulator or in the account, and the registry agrees."""
    yield
    live = [(i.id, i.state) for i in aws.live()]
    groups = aws.running_process_groups()
    registry = Registry()
    not_terminated = [(r.resource_id, r.state) for r in registry.resources(provider="aws")
                      if r.kind == "instance" and r.state != "terminated"]
    assert not live, f"instances left running at the emulator: {live}"
    assert not groups, f"instance processes still running: {groups}"
    assert not not_terminated, f"registry holds instances not recorded as terminated: {not_terminated}"
    assert not aws.cumulo_groups(), f"cumulo security groups left: {aws.cumulo_groups()}"
    assert not aws.cumulo_keys(), f"cumulo key pairs left: {aws.cumulo_keys()}"
