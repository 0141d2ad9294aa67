"""Environment sync benchmark: connect() to first result on emulated Lambda instances with a boot delay.

Variants, side by side in one run, for workers=1 and workers=N:
  prepared  instances whose image already has the packages (environment="none", nothing installed):
            the boot delay and launch pacing alone;
  sync-cold bare instances (system python3 only), environment="sync", an empty uv cache;
  sync-warm the same with the cache the cold run filled.
The install step alone is read from each instance's bootstrap log ("environment installed in Ns").
Usage:

    python benchmarks/bench_envsync.py [--boot 20] [--launch-interval 10] [--workers 8] \
        [--out benchmarks/results/envsync.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lambda_emulator import Emulator  # noqa: E402
from tests.lambda_support import fast_config  # noqa: E402


def one(variant: str, workers: int, *, boot: float, interval: float, tmp: Path, cache: Path) -> dict[str, float]:
    import cumulo

    emu = Emulator(image="prepared" if variant == "prepared" else "bare", boot_seconds=boot,
                   launch_interval=interval).start()
    os.environ["LAMBDA_API_KEY"] = emu.api_key
    os.environ["UV_CACHE_DIR"] = str(cache)  # the instances' uv cache (they inherit this environment)
    settings = fast_config(emu, tmp / variant / str(workers)) | {
        "cumulo.lambda.launch-interval": interval, "cumulo.lambda.boot-timeout": boot + 120,
        "cumulo.lambda.scheduler-timeout": 600, "cumulo.lambda.workers-timeout": 900,
        "cumulo.lambda.install-packages": variant != "prepared", "cumulo.lambda.python": "/usr/bin/python3",
        "cumulo.env.find-links": ["/opt/wheels"] if Path("/opt/wheels").is_dir() else [],
    }
    try:
        with dask.config.set(settings):
            t0 = time.perf_counter()
            cluster = cumulo.connect("lambda", gpu="A10", workers=workers)
            assert cluster.client.submit(sum, range(10)).result() == 45
            elapsed = time.perf_counter() - t0
            installs = []
            for inst in emu.instances.values():
                log = inst.workdir / "bootstrap.log" if inst.workdir else None
                if log is not None and log.exists():
                    m = re.search(r"environment installed in (\d+)s", log.read_text())
                    if m:
                        installs.append(float(m.group(1)))
            cluster.close()
    finally:
        emu.close()
    return {"connect_s": elapsed, "install_s": max(installs) if installs else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boot", type=float, default=20.0)
    parser.add_argument("--launch-interval", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "envsync.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cumulo-bench-env-") as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "uv-cache"
        for workers in (1, args.workers):
            results = {}
            for variant in ("prepared", "sync-cold", "sync-warm"):
                if variant == "sync-cold":
                    cache = tmp / f"uv-cache-{workers}"  # an empty cache for each cold run
                results[variant] = one(variant, workers, boot=args.boot, interval=args.launch_interval, tmp=tmp,
                                       cache=cache)
                print(workers, variant, results[variant], flush=True)
            rows.append((workers, results))
    one_w = dict(rows[0][1])
    lines = [
        "# Environment sync: connect() to first result on emulated Lambda instances",
        "",
        f"Boot delay {args.boot:g} s per instance, launches paced {args.launch_interval:g} s apart (client and "
        f"emulator), {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. One run of each; `python benchmarks/bench_envsync.py` reproduces it.",
        "",
        "| workers | prepared image (s) | sync, cold cache (s) | sync, warm cache (s) | install alone, cold / warm (s) "
        "| sync warm - prepared (s) |",
        "|---|---|---|---|---|---|",
    ]
    for workers, r in rows:
        lines.append(f"| {workers} | {r['prepared']['connect_s']:.1f} | {r['sync-cold']['connect_s']:.1f} | "
                     f"{r['sync-warm']['connect_s']:.1f} | {r['sync-cold']['install_s']:.0f} / "
                     f"{r['sync-warm']['install_s']:.0f} | {r['sync-warm']['connect_s'] - r['prepared']['connect_s']:.1f} |")
    many = dict(rows[-1][1])
    lines += ["", "Ratios (workers=%d / workers=1): " % args.workers + ", ".join(
        f"{v} {many[v]['connect_s'] / one_w[v]['connect_s']:.2f}" for v in ("prepared", "sync-cold", "sync-warm")),
        "", f"Median install step (warm): {statistics.median([r['sync-warm']['install_s'] for _, r in rows]):.0f} s.",
        "", f"Launch pacing alone puts the last of {args.workers} instances {(args.workers - 1) * args.launch_interval:g} s "
        "after the head (Lambda launches one instance per request, about one per 10 s): that, not the install, is "
        "most of the workers=N time; the installs run in parallel with it (workers boot while the head installs). "
        "'Cold' is the instances' uv cache; the client's own cache (the resolve check, the wheel build) stays warm."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
