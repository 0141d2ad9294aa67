"""Cost control: a rate for local workers, a budget that closes a cluster, an idle timeout, the reaper,
and what a forgotten cluster would have cost.

    python examples/cost_control.py [--rate 24]

Local clusters have no price, so cumulo shows "no rate set" for them, never $0. Setting
``cumulo.cost.rate-per-worker-hour`` prices them (here $24 per worker-hour, as if each worker
were an 8×H100 cloud node, so that a few seconds cost cents), and then budgets, idle timeouts
and the per-cell costs of notebooks/cost_control.ipynb work on local clusters the way they do
on cloud GPUs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import dask

import cumulo
from cumulo import datasets, pipeline
from cumulo.life import reaper
from cumulo.life.registry import Registry


def wait_closed(cluster: cumulo.Cluster, timeout: float = 60.0) -> str:
    """Wait until a guard closed ``cluster``; return the reason its registry row gives."""
    deadline = time.monotonic() + timeout
    while cluster.status in ("running", "closing") and time.monotonic() < deadline:
        time.sleep(0.2)
    row = Registry().latest(cluster.name)
    return f"{row.state}: {row.note}" if row is not None else "no row"


def forgotten_cost(rate_per_hour: float, hours: float) -> float:
    """What a cluster billing ``rate_per_hour`` costs when nobody stops it for ``hours``."""
    return rate_per_hour * hours


def main(rate: float = 24.0) -> None:
    # guards check every second here (the default is 10 s), so that the demo is quick
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": rate, "cumulo.guards.interval": "1s",
                          "cumulo.widgets.cell-line-on-connect": False}):
        with cumulo.connect("local", name="cost-demo", workers=2, threads_per_worker=1,
                            budget=5.0, idle_timeout="20m") as cluster, \
                tempfile.TemporaryDirectory(prefix="cumulo-cost-") as tmp:
            path = datasets.taxi(tmp, rows=200_000, partitions=4, client=cluster.client)
            result = pipeline.run(path)
            print(f"pipeline kept {result.rows_kept:,} trips; spend so far: {cluster.usage.spend().text()}")

            # a budget: the watchdog closes the cluster when its spend reaches it
            with cumulo.connect("local", name="tiny-budget", workers=1, budget=0.02) as tiny:
                print("tiny-budget:", wait_closed(tiny))

            # an idle timeout: no task for that long and the cluster closes itself
            with cumulo.connect("local", name="idle-demo", workers=1, idle_timeout="2s") as idle:
                print("idle-demo:", wait_closed(idle))

            # the reaper, as `cumulo reap --dry-run` runs it: this process is alive and watching
            # cost-demo, so there is nothing to reap
            dry = subprocess.run([sys.executable, "-m", "cumulo.cli", "reap", "--dry-run"],
                                 capture_output=True, text=True, timeout=120)
            print("cumulo reap --dry-run:", dry.stdout.strip().splitlines()[0] if dry.stdout.strip() else "-")

            # ... and what it would decide if this process went quiet for a weekend
            later = reaper.sweep(dry_run=True, orphans=False, now=time.time() + 64 * 3600)
            for r in later.clusters:
                print("in 64 h:", r.text())
            hourly = rate * cluster.info()["workers"]
            print(f"forgotten for a weekend (64 h): ${forgotten_cost(hourly, 64):,.2f}; "
                  f"with the 20 min idle timeout: ${forgotten_cost(hourly, 20 / 60):,.2f}")
            a10 = cumulo.prices(gpu="A10", provider="lambda").iloc[0]
            print(f"the same weekend on a Lambda {a10.instance_type} (${a10.on_demand_per_hour:.2f}/h, "
                  f"{a10.source} {a10.as_of}): ${forgotten_cost(a10.on_demand_per_hour, 64):,.2f}")
        print(f"cost-demo closed; it cost {cluster.usage.spend().text()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=24.0, help="$ per local worker-hour (default 24)")
    main(parser.parse_args().rate)
