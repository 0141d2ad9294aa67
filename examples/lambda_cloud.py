"""Cloud GPUs from a script: Lambda Cloud, against cumulo's emulator unless you ask for the real thing.

    CUMULO_LAMBDA_EMULATOR=1 python examples/lambda_cloud.py          # the whole flow, fake money
    LAMBDA_API_KEY=... CUMULO_LAMBDA_LAUNCH=1 python examples/lambda_cloud.py   # real instances, real bills

With neither it explains and exits. The emulator (tests/lambda_emulator.py) needs a source checkout
of cumulo; its "instances" are Dask processes on this machine. The notebook
notebooks/lambda_cloud.ipynb shows the same flow cell by cell; docs/lambda.md explains it.
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
    """cumulo's Lambda API emulator, in this process, with cumulo pointed at it."""
    repo = Path(cumulo.__file__).resolve().parents[2]  # a source checkout: sdk/cumulo/__init__.py
    sys.path.insert(0, str(repo))
    from tests.lambda_emulator import Emulator

    emu = Emulator(boot_seconds=1.0, image="prepared").start()
    os.environ["LAMBDA_API_KEY"] = emu.api_key  # the emulator's own fake key
    dask.config.set({
        "cumulo.lambda.base-url": emu.base_url,
        # its "instances" are CPU processes with this Python (a prepared image): plain `dask worker`, no GPU probe,
        # nothing installed (tests/test_lambda_env.py runs bare instances with the environment sync)
        "cumulo.cloud.worker-command": "dask worker",
        "cumulo.cloud.worker-args": "--nthreads 1 --no-dashboard",
        "cumulo.cloud.gpu-probe": False,
        "cumulo.cloud.install-packages": False,
        "cumulo.lambda.request-interval": 0.0,
        "cumulo.lambda.launch-interval": 0.0,
        "cumulo.lambda.poll-interval": 0.2,
    })
    return emu


def main() -> int:
    emulator = os.environ.get("CUMULO_LAMBDA_EMULATOR") == "1"
    real = bool(os.environ.get("LAMBDA_API_KEY")) and os.environ.get("CUMULO_LAMBDA_LAUNCH") == "1"
    if not (emulator or real):
        print("nothing launched: set CUMULO_LAMBDA_EMULATOR=1 to run against cumulo's emulator, or "
              "LAMBDA_API_KEY and CUMULO_LAMBDA_LAUNCH=1 to rent real instances (they bill until terminated)")
        return 0
    emu = start_emulator() if emulator else None
    try:
        print("running against", "the Lambda API emulator" if emu else "Lambda Cloud itself")
        import dask.dataframe as dd
        import pandas as pd

        with cumulo.connect("lambda", name="lambda-demo", gpu="A10", workers=2, budget=2.0) as cluster:
            print("scheduler:", cluster.client.scheduler.address)
            print("estimated $/h:", Registry().find_open("lambda-demo").rate_per_hour)
            df = dd.from_pandas(pd.DataFrame({"zone": [i % 7 for i in range(10_000)], "fare": range(10_000)}),
                                npartitions=8)
            print("mean fare by zone:", df.groupby("zone").fare.mean().compute().round(1).to_dict())
        print("state:", Registry().latest("lambda-demo").state)
        from cumulo.providers.lambda_cloud import LambdaProvider

        orphans = asyncio.run(LambdaProvider().sweep_orphans(Registry(), dry_run=True))
        print("orphans:", [o.line() for o in orphans])
    finally:
        if emu is not None:
            print("instances still billing at the emulator:", [i.name for i in emu.live()])
            emu.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
