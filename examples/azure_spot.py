"""Spot GPU VMs on Azure from a script, with fallback: against cumulo's ARM emulator unless you ask for the real thing.

    CUMULO_AZURE_EMULATOR=1 python examples/azure_spot.py     # the whole flow, fake money
    CUMULO_AZURE_LAUNCH=1 python examples/azure_spot.py       # real VMs (DefaultAzureCredential), real bills

With neither it explains and exits. The emulator (tests/azure_emulator.py, and a stand-in for Azure's retail
prices API) needs a source checkout of cumulo and its test extra; its "VMs" are Dask processes on this
machine. The notebook notebooks/azure_spot.ipynb shows the same flow cell by cell; docs/azure.md explains it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import dask

import cumulo
from cumulo.life.registry import Registry


def start_emulator(stack: ExitStack) -> None:
    """cumulo's ARM emulator and the retail prices stand-in, in this process, with cumulo pointed at them."""
    repo = Path(cumulo.__file__).resolve().parents[2]  # a source checkout: sdk/cumulo/__init__.py
    sys.path.insert(0, str(repo))
    from tests.azure_emulator import ArmEmulator
    from tests.price_emulator import PriceEmulator, azure_item

    arm = ArmEmulator(boot_seconds=0.5).start()
    stack.callback(arm.close)
    os.environ.update(arm.env())
    prices = stack.enter_context(PriceEmulator(azure_pages=[[
        azure_item("Standard_NC24ads_A100_v4", 3.673), azure_item("Standard_NC24ads_A100_v4", 0.9, spot=True)]]))
    arm.faults.spot_refused = 1  # the first Spot VM is refused for capacity: it falls back to regular priority
    dask.config.set({**arm.cumulo_config(), "cumulo.catalog.azure-url": prices.azure_url,
                     "cumulo.cloud.worker-command": "dask worker", "cumulo.cloud.worker-args": "--nthreads 1", "cumulo.cloud.gpu-probe": False,
                     "cumulo.cloud.install-packages": False, "cumulo.azure.poll-interval": 0.2,
                     "cumulo.cloud.print-progress": True})


def main() -> int:
    emulator = os.environ.get("CUMULO_AZURE_EMULATOR") == "1"
    if not emulator and os.environ.get("CUMULO_AZURE_LAUNCH") != "1":
        print("set CUMULO_AZURE_EMULATOR=1 (fake money) or CUMULO_AZURE_LAUNCH=1 (real VMs); see docs/azure.md")
        return 0
    with ExitStack() as stack:
        if emulator:
            start_emulator(stack)
        with cumulo.connect("azure", name="azure-spot", gpu="A100", workers=3, region="eastus", spot=True,
                            budget=5.0) as cluster:
            print("billing $/h:", round(Registry().find_open("azure-spot").rate_per_hour, 3))
            print("sum:", cluster.client.submit(sum, range(100)).result())
        print("state:", Registry().latest("azure-spot").state)
        from cumulo.providers.azure import AzureProvider

        print("orphans:", asyncio.run(AzureProvider().sweep_orphans(Registry(), dry_run=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
