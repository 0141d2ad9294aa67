"""TLS benchmark: what per-cluster TLS costs a local cluster on loopback, TLS vs plain TCP, in one run.

(a) connect to first result: ``cumulo.connect()`` + one small computation in a
    fresh interpreter, with ``cumulo.local.tls`` true (the default) and false,
    so certificate generation, handshakes and imports count as a user meets them;
    plus the in-process cost of making and removing one cluster's credentials.
(b) a shuffle-heavy job: a dask dataframe hash join (p2p shuffle) of two random
    frames generated on the workers, so every row crosses between workers.
(c) bulk transfer: arrays made on one worker and summed on the other, i.e.
    the worker-to-worker link alone.

Both clusters of (b) and (c) are started once and stay up side by side (2
workers x 1 thread each); runs alternate between them so that drift on the
machine hits both alike. Each run is measured twice: wall-clock, and the CPU
seconds the cluster's processes spent (scheduler and client in this process,
plus the workers; for (a) the whole process tree). On a machine shared with
other jobs the CPU seconds are the steadier measure of what encryption adds.
The report gives medians and TLS/TCP ratios; a ratio is the median over rounds
of TLS run / TCP run of the same round. Usage:

    python benchmarks/bench_tls.py [--rows 3000000] [--repeats 7] [--out benchmarks/results/tls.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONNECT = textwrap.dedent(
    """
    import time; t0 = time.perf_counter()
    import cumulo
    cluster = cumulo.connect(workers=2, threads_per_worker=1)
    assert cluster.client.submit(sum, range(10)).result() == 45
    print(time.perf_counter() - t0, cluster.client.scheduler.address)
    cluster.close()
    """
)
VARIANTS = ("tls", "tcp")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fresh(tls: bool, env: dict[str, str]) -> tuple[float, float]:
    """(seconds from interpreter start to connect()'s first result, CPU seconds of the whole process
    tree, closing included), in a fresh interpreter."""
    env = {**env, "DASK_CUMULO__LOCAL__TLS": "true" if tls else "false"}
    before = _children_cpu()
    done = subprocess.run([sys.executable, "-c", CONNECT], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    seconds, address = done.stdout.split()[:2]
    assert address.startswith("tls://" if tls else "tcp://"), address
    return float(seconds), _children_cpu() - before


class CpuMeter:
    """CPU seconds spent by one cluster's processes: this process (its scheduler, the client) and its workers."""

    def __init__(self, client: Any) -> None:
        import psutil

        self.processes = [psutil.Process()] + [psutil.Process(pid) for pid in client.run(os.getpid).values()]

    def total(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self.processes)


def _part(seed: int, rows: int, keys: int) -> Any:
    """One random partition: int64 key, two float columns, a short string column (~40 B per row)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "key": rng.integers(0, keys, rows),
        "a": rng.random(rows),
        "b": rng.random(rows),
        "tag": pd.array(rng.integers(0, 1000, rows).astype(str), dtype="string[pyarrow]"),
    })


def _frames(rows: int, partitions: int) -> tuple[Any, Any]:
    import dask.dataframe as dd

    per = rows // partitions
    left = dd.from_map(_part, range(partitions), rows=per, keys=rows, enforce_metadata=False)
    right = dd.from_map(_part, range(1000, 1000 + partitions), rows=per, keys=rows, enforce_metadata=False)
    return left, right


def _join(client: Any, rows: int, partitions: int) -> float:
    """Hash join on ``key`` (p2p shuffle of both sides) reduced to one number on the workers."""
    left, right = _frames(rows, partitions)
    joined = left.merge(right, on="key", how="inner", shuffle_method="p2p")
    t0 = time.perf_counter()
    total = client.compute(joined["a_x"].sum() + joined["b_y"].sum()).result()
    elapsed = time.perf_counter() - t0
    assert total > 0
    return elapsed


def _transfer(client: Any, megabytes: int, chunks: int) -> float:
    """Make ``chunks`` arrays totalling ``megabytes`` on one worker and sum them on the other."""
    import distributed
    import numpy as np

    first, second = sorted(client.scheduler_info(n_workers=-1)["workers"])[:2]
    n = megabytes * 2**20 // 8 // chunks
    parts = [client.submit(np.random.default_rng(i).random, n, workers=[first], pure=False) for i in range(chunks)]
    distributed.wait(parts)
    t0 = time.perf_counter()
    total = client.submit(lambda *xs: float(sum(x.sum() for x in xs)), *parts, workers=[second],
                          allow_other_workers=False, pure=False).result()
    elapsed = time.perf_counter() - t0
    assert total > 0
    del parts
    return elapsed


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _paired(values: dict[str, list[float]], variant: str) -> float:
    """Median over rounds of (this variant's run / the TCP run of the same round): drift cancels."""
    return _median([a / b for a, b in zip(values[variant], values["tcp"], strict=True)])


def _table(wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> list[str]:
    """Wall-clock and CPU seconds per variant (median, min, max) and the paired TLS/TCP ratios."""
    def row(label: str, v: str) -> str:
        w, c = wall[v], cpu[v]
        return (f"| {label} | {_median(w):.3f} | {min(w):.3f} | {max(w):.3f} | **{_paired(wall, v):.2f}** "
                f"| {_median(c):.3f} | **{_paired(cpu, v):.2f}** |")

    return [
        "| variant | wall s (median) | min | max | wall ratio TLS/TCP | CPU s (median) | CPU ratio TLS/TCP |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("TLS (default)", "tls"),
        row("TCP (`cumulo.local.tls: false`)", "tcp"),
    ]


def _timed(meter: CpuMeter, fn: Callable[[], float]) -> tuple[float, float]:
    before = meter.total()
    wall = fn()
    return wall, meter.total() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="rows of each side of the join")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--transfer-mb", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--connect-repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tls.md"))
    args = parser.parse_args()

    import logging

    import dask
    import distributed

    import cumulo
    from cumulo.security import local_security

    logging.getLogger("distributed").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="cumulo-bench-tls-"))
    env = {**os.environ, "CUMULO_REGISTRY": str(work / "registry.db")}
    os.environ["CUMULO_REGISTRY"] = env["CUMULO_REGISTRY"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    # (a) connect to first result, fresh interpreters, alternating; credentials alone, in process
    connect: dict[str, list[float]] = {v: [] for v in VARIANTS}
    connect_cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.connect_repeats):
        for variant in VARIANTS:
            wall, cpu = _fresh(variant == "tls", env)
            connect[variant].append(wall)
            connect_cpu[variant].append(cpu)
        print("connect", {k: round(v[-1], 3) for k, v in connect.items()},
              "cpu", {k: round(v[-1], 3) for k, v in connect_cpu.items()}, flush=True)
    creds: list[float] = []
    for i in range(20):
        t0 = time.perf_counter()
        local_security.create_local_tls(f"bench{i:04d}")
        local_security.remove_local_tls(f"bench{i:04d}")
        creds.append(time.perf_counter() - t0)

    # (b), (c): both clusters up side by side, alternating runs
    clusters = {}
    for variant in VARIANTS:
        with dask.config.set({"cumulo.local.tls": variant == "tls"}):
            clusters[variant] = cumulo.connect(workers=2, threads_per_worker=1, name=f"bench-{variant}")
    join: dict[str, list[float]] = {v: [] for v in VARIANTS}
    transfer: dict[str, list[float]] = {v: [] for v in VARIANTS}
    join_cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    transfer_cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    left, right = _frames(args.rows, args.partitions)
    try:
        meters = {v: CpuMeter(c.client) for v, c in clusters.items()}
        one = clusters["tls"].client.compute(left.partitions[0].memory_usage(deep=True).sum()).result()
        shuffled_mb = 2 * one * args.partitions / 2**20
        for variant in VARIANTS:  # warm up: imports and first-touch memory on every worker
            _join(clusters[variant].client, args.rows // 8, args.partitions)
            _transfer(clusters[variant].client, 64, 2)
        for _ in range(args.repeats):
            for variant in VARIANTS:
                client, meter = clusters[variant].client, meters[variant]
                wall, cpu = _timed(meter, lambda: _join(client, args.rows, args.partitions))
                join[variant].append(wall)
                join_cpu[variant].append(cpu)
                wall, cpu = _timed(meter, lambda: _transfer(client, args.transfer_mb, 8))
                transfer[variant].append(wall)
                transfer_cpu[variant].append(cpu)
            print("join", {k: round(v[-1], 3) for k, v in join.items()},
                  "cpu", {k: round(v[-1], 3) for k, v in join_cpu.items()},
                  "transfer", {k: round(v[-1], 3) for k, v in transfer.items()},
                  "cpu", {k: round(v[-1], 3) for k, v in transfer_cpu.items()}, flush=True)
        addresses = {v: c.client.scheduler.address for v, c in clusters.items()}
    finally:
        for cluster in clusters.values():
            cluster.close()

    mbps = {v: [args.transfer_mb / s for s in transfer[v]] for v in VARIANTS}
    tls_mbps, tcp_mbps = _median(mbps["tls"]), _median(mbps["tcp"])
    lines = [
        "# cumulo local TLS benchmark",
        "",
        f"{started}; {platform.platform()}; {os.cpu_count()} CPUs; Python {platform.python_version()}, "
        f"dask {dask.__version__}, distributed {distributed.__version__}, OpenSSL "
        f"{__import__('ssl').OPENSSL_VERSION.split()[1]}.",
        f"Command: `python benchmarks/bench_tls.py --rows {args.rows} --partitions {args.partitions} "
        f"--transfer-mb {args.transfer_mb} --repeats {args.repeats} --connect-repeats {args.connect_repeats}`.",
        f"Clusters: 2 workers x 1 thread each, on 127.0.0.1 (`{addresses['tls'].split(':')[0]}://` and "
        f"`{addresses['tcp'].split(':')[0]}://`); runs alternate between them. Ratios: median over rounds "
        "of (TLS run / TCP run of the same round).",
        "",
        f"## (a) connect to first result (fresh interpreter, {args.connect_repeats} runs each)",
        "",
        *_table(connect, connect_cpu),
        "",
        f"Making and removing one cluster's credentials (CA + 3 EC P-256 certificates, files, owner and "
        f"config file), in process: median {_median(creds) * 1000:.1f} ms of 20.",
        "",
        f"## (b) shuffle-heavy: p2p hash join of 2 x {args.rows:,} rows ({shuffled_mb:,.0f} MB in memory) "
        f"in {args.partitions} partitions",
        "",
        *_table(join, join_cpu),
        "",
        f"## (c) worker-to-worker transfer: {args.transfer_mb} MB of float64 arrays in 8 pieces",
        "",
        *_table(transfer, transfer_cpu),
        "",
        f"Throughput: TLS {tls_mbps:,.0f} MB/s, TCP {tcp_mbps:,.0f} MB/s (median).",
        "",
        f"Load average when the run ended: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(other jobs shared the machine: wall-clock runs vary widely; the CPU seconds are steadier).",
        "",
    ]
    report = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
