"""Spot GPUs on AWS from a script, with fallback: against cumulo's EC2 emulator unless you ask for the real thing.

    CUMULO_AWS_EMULATOR=1 python examples/aws_spot.py     # the whole flow, fake money
    CUMULO_AWS_LAUNCH=1 python examples/aws_spot.py       # real instances (boto3's credentials), real bills

With neither it explains and exits. The emulator (moto's server and tests/aws_emulator.py) needs a source
checkout of cumulo and its test extra; its "instances" are Dask processes on this machine. The notebook
notebooks/aws_spot.ipynb shows the same flow cell by cell; docs/aws.md explains it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import dask

import cumulo
from cumulo.life.registry import Registry


def start_emulator():  # type: ignore[no-untyped-def]
    """cumulo's EC2 emulator, in this process, with boto3 pointed at it (no cumulo setting needed)."""
    repo = Path(cumulo.__file__).resolve().parents[2]  # a source checkout: sdk/cumulo/__init__.py
    sys.path.insert(0, str(repo))
    from tests.aws_emulator import AwsEmulator

    emu = AwsEmulator(boot_seconds=0.5).start()
    os.environ.update(emu.env())
    emu.spot_prices = {"g5.xlarge": {"us-east-1a": 0.45, "us-east-1b": 0.38, "us-east-1c": 0.41}}
    emu.faults.spot_refused = {"us-east-1b"}  # the cheapest zone has no spot capacity: the next one is used
    dask.config.set({"cumulo.cloud.worker-command": "dask worker", "cumulo.cloud.worker-args": "--nthreads 1",
                     "cumulo.cloud.gpu-probe": False, "cumulo.cloud.install-packages": False,
                     "cumulo.aws.poll-interval": 0.2, "cumulo.cloud.print-progress": True})
    return emu


def main() -> int:
    emulator = os.environ.get("CUMULO_AWS_EMULATOR") == "1"
    if not emulator and os.environ.get("CUMULO_AWS_LAUNCH") != "1":
        print("set CUMULO_AWS_EMULATOR=1 (fake money) or CUMULO_AWS_LAUNCH=1 (real instances); see docs/aws.md")
        return 0
    emu = start_emulator() if emulator else None
    try:
        with cumulo.connect("aws", name="aws-spot", gpu="A10G", workers=3, spot=True, budget=5.0) as cluster:
            print("billing $/h:", round(Registry().find_open("aws-spot").rate_per_hour, 3))
            print("sum:", cluster.client.submit(sum, range(100)).result())
        print("state:", Registry().latest("aws-spot").state)
        from cumulo.providers.aws import AWSProvider

        print("orphans:", asyncio.run(AWSProvider().sweep_orphans(Registry(), dry_run=True)))
    finally:
        if emu is not None:
            emu.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
