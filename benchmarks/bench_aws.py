"""Time to a ready AWS cluster on the EC2 emulator: 1 and 8 workers, all workers in one RunInstances vs one each.

"Ready" is connect() returning: the offer read (catalog, zones, spot prices, image, quota), the security
group and key pair made, the head launched and its scheduler answering over TLS, the workers launched and
joined. The emulator's instances are local processes (tests/aws_emulator.py) booting after 0.2 s, so what
is measured is cumulo's own path: API round trips through boto3 to moto's server, the TLS handshakes, the
polling; a real instance's minutes of boot are not in it. Close (terminate, confirmed, security group and
key pair removed) is timed too. Side by side in one run, interleaved, median of ``--repeats``:

- workers=1 (a head only), workers=8 with one RunInstances for the 7 workers (``batch_launch``, AWS's
  way), and workers=8 with one request per worker (Lambda's way, the layer's default).

Run:  .venv/bin/python benchmarks/bench_aws.py [--repeats 3]
Writes benchmarks/results/aws.md (and prints it). Needs the test extra (moto) and a source checkout.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import dask  # noqa: E402

import cumulo  # noqa: E402
from cumulo.providers.aws.adapter import AWSAdapter  # noqa: E402
from tests.aws_emulator import AwsEmulator  # noqa: E402
from tests.aws_support import fast_config  # noqa: E402


def one(workers: int, *, batch: bool) -> tuple[float, float, int]:
    """(seconds to ready, seconds to close, RunInstances requests) for one cluster."""
    AWSAdapter.batch_launch = batch
    emu = AwsEmulator().start()
    os.environ.update(emu.env())
    try:
        t0 = time.perf_counter()
        cluster = cumulo.connect("aws", gpu="A10G", workers=workers, name=f"bench-{workers}")
        ready = time.perf_counter() - t0
        assert len(cluster.client.scheduler_info()["workers"]) == workers
        t1 = time.perf_counter()
        cluster.close()
        closed = time.perf_counter() - t1
        assert not emu.live()
        return ready, closed, emu.run_requests
    finally:
        AWSAdapter.batch_launch = True
        emu.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "aws.md"))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    cases = {"workers=1": (1, True), "workers=8, one RunInstances for the workers": (8, True),
             "workers=8, one RunInstances per worker": (8, False)}
    runs: dict[str, list[tuple[float, float, int]]] = {k: [] for k in cases}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CUMULO_REGISTRY"] = str(Path(tmp) / "registry.db")
        config = fast_config(Path(tmp))
        config["cumulo.cloud.worker-args"] = "--nthreads 1 --no-dashboard --memory-limit 0"
        with dask.config.set(config):
            for _ in range(args.repeats):
                for name, (workers, batch) in cases.items():
                    runs[name].append(one(workers, batch=batch))
    load_after = os.getloadavg()[0]
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), v[0][2])
           for k, v in runs.items()}
    batch8, single8 = med["workers=8, one RunInstances for the workers"], med["workers=8, one RunInstances per worker"]
    lines = [
        "# cumulo AWS benchmark: time to a ready cluster on the EC2 emulator", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.platform()}; {os.cpu_count()} CPUs; "
        f"python {platform.python_version()}",
        f"Command: `.venv/bin/python benchmarks/bench_aws.py --repeats {args.repeats}`; 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after", "",
        "| cluster | ready (median) | close (median) | RunInstances requests |", "|---|---|---|---|",
    ]
    for name, (ready, closed, requests) in med.items():
        lines.append(f"| {name} | {ready:.2f} s | {closed:.2f} s | {requests} |")
    lines += [
        "", f"8 workers, batch / one per worker: **{batch8[0] / single8[0]:.2f}x** the time to ready.", "",
        *(f"Runs (ready, close s), {name}: " + ", ".join(f"({r:.2f}, {c:.2f})" for r, c, _ in v)
          for name, v in runs.items()),
        "", "The instances are local processes on 2 cores: 8 dask workers starting at once compete for them, "
        "which is most of the 8-worker time; on AWS each instance boots on its own hardware and the boot "
        "(minutes) dominates, so there what the batch saves is the requests and their pacing.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
