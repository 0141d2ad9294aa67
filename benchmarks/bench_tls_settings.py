"""Which of distributed's comm settings brings worker-to-worker TLS nearer plain TCP (issue 21)?

Part (c) of bench_tls.py, the bulk transfer between two local workers, run on
several clusters that stay up side by side and differ only in one setting given
to their worker processes (through the environment they are spawned with, so
that settings read when distributed is imported count too): plain TCP, TLS as
cumulo starts it, and TLS with each candidate. Runs alternate between the
clusters; ratios are medians over rounds of (variant / TCP of the same round),
for wall-clock and for the CPU seconds of the cluster's processes. Usage:

    python benchmarks/bench_tls_settings.py [--transfer-mb 512] [--repeats 7] [--out benchmarks/results/tls_settings.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_tls import CpuMeter, _median, _paired, _timed, _transfer  # noqa: E402  (a sibling script)

#: variant -> (TLS on, environment of its worker processes)
CANDIDATES: dict[str, tuple[bool, dict[str, str]]] = {
    "tcp": (False, {}),
    "tls": (True, {}),
    "tls, comm.shard 8MiB": (True, {"DASK_DISTRIBUTED__COMM__SHARD": "8MiB"}),
    "tls, comm.shard 1GiB": (True, {"DASK_DISTRIBUTED__COMM__SHARD": "1GiB"}),
    "tls, comm.offload off": (True, {"DASK_DISTRIBUTED__COMM__OFFLOAD": "false"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--transfer-mb", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tls_settings.md"))
    args = parser.parse_args()

    import logging
    import tempfile

    import dask
    import distributed

    import cumulo

    logging.getLogger("distributed").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="cumulo-bench-tls-settings-"))
    os.environ["CUMULO_REGISTRY"] = str(work / "registry.db")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = [os.getloadavg()]
    clusters = {}
    try:
        for i, (variant, (tls, env)) in enumerate(CANDIDATES.items()):
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # inherited by the worker processes spawned now
            try:
                with dask.config.set({"cumulo.local.tls": tls}):
                    clusters[variant] = cumulo.connect(workers=2, threads_per_worker=1, name=f"bench-settings-{i}")
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        meters = {v: CpuMeter(c.client) for v, c in clusters.items()}
        for cluster in clusters.values():  # warm up: imports and first-touch memory on every worker
            _transfer(cluster.client, 64, 2)
        wall: dict[str, list[float]] = {v: [] for v in clusters}
        cpu: dict[str, list[float]] = {v: [] for v in clusters}
        for _ in range(args.repeats):
            for variant, cluster in clusters.items():
                client, meter = cluster.client, meters[variant]
                w, c = _timed(meter, lambda: _transfer(client, args.transfer_mb, 8))
                wall[variant].append(w)
                cpu[variant].append(c)
            print({k: round(v[-1], 3) for k, v in wall.items()}, flush=True)
    finally:
        for cluster in clusters.values():
            cluster.close()
    load.append(os.getloadavg())

    lines = [
        "# cumulo local TLS: distributed's comm settings for bulk transfer (issue 21)",
        "",
        f"{started}; {platform.platform()}; {os.cpu_count()} CPUs; Python {platform.python_version()}, "
        f"dask {dask.__version__}, distributed {distributed.__version__}, OpenSSL {ssl.OPENSSL_VERSION.split()[1]}.",
        f"Command: `python benchmarks/bench_tls_settings.py --transfer-mb {args.transfer_mb} --repeats {args.repeats}`.",
        f"{args.transfer_mb} MB of float64 arrays in 8 pieces made on one worker and summed on the other; "
        f"{len(clusters)} clusters (2 workers x 1 thread) up side by side, runs alternating, {args.repeats} rounds. "
        "Ratios: median over rounds of (variant / TCP of the same round).",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load[0])}; "
        f"after: {', '.join(f'{x:.2f}' for x in load[1])}.",
        "",
        "| variant (worker environment) | wall s (median) | min | max | wall ratio /TCP | CPU s (median) "
        "| CPU ratio /TCP | MB/s (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in clusters:
        w, c = wall[variant], cpu[variant]
        env = ", ".join(f"`{k}={v}`" for k, v in CANDIDATES[variant][1].items())
        lines.append(f"| {variant}{' (' + env + ')' if env else ''} | {_median(w):.3f} | {min(w):.3f} | {max(w):.3f} "
                     f"| **{_paired(wall, variant):.2f}** | {_median(c):.3f} | **{_paired(cpu, variant):.2f}** "
                     f"| {_median([args.transfer_mb / s for s in w]):,.0f} |")
    report = "\n".join([*lines, ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
