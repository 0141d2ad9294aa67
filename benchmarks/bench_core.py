"""Core benchmark: cumulo vs raw dask vs pandas, side by side in one run.

(a) connect to first result: ``cumulo.connect()`` + one small computation vs
    ``LocalCluster()`` + ``Client`` + the same, each in a fresh interpreter so
    import and start-up costs are counted the way a user meets them: with the
    bytecode an installed package has (pip compiles it at install; distributed's
    is in site-packages). Where PYTHONDONTWRITEBYTECODE is set and the source
    tree has none (this machine), an editable cumulo would be compiled from source
    in every process; the children get a bytecode cache of their own
    (PYTHONPYCACHEPREFIX, filled by one untimed run of each variant), and the
    compile-every-time variants are measured beside them for comparison.
(b) the demo pipeline (filter, join, groupby, hourly windows) through cumulo,
    through raw dask on the same cluster (a plain Client to the same scheduler),
    through raw dask on a separate plain LocalCluster of the same shape, and in
    plain pandas on one core.

Runs alternate between variants so that drift on the machine hits all alike;
the report gives medians and ratios. Usage:

    python benchmarks/bench_core.py [--rows 4000000] [--repeats 5] [--connect-repeats 7] [--skip-pipeline]
                                    [--out benchmarks/results/core.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd

CONNECT_CUMULO = textwrap.dedent(
    """
    import time; t0 = time.perf_counter()
    import cumulo
    cluster = cumulo.connect(workers=2, threads_per_worker=1)
    assert cluster.client.submit(sum, range(10)).result() == 45
    print(time.perf_counter() - t0)
    cluster.close()
    """
)
#: The variants run with PYTHONDONTWRITEBYTECODE=1: a module without a .pyc (an editable cumulo's) is compiled
#: from source in every process.
COMPILED = "no bytecode cache"
CONNECT_RAW = textwrap.dedent(
    """
    import time; t0 = time.perf_counter()
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    assert client.submit(sum, range(10)).result() == 45
    print(time.perf_counter() - t0)
    client.close(); cluster.close()
    """
)


def _fresh(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(seconds from the interpreter's start to the first result, seconds of the whole process from
    launch to exit, close and interpreter shutdown included) for ``code`` in a fresh interpreter."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    whole = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[0]), whole


def pandas_pipeline(path: Path) -> pd.DataFrame:
    """The demo pipeline's steps (cumulo.pipeline.transform) in plain pandas, on one core."""
    from cumulo.datasets import zones
    from cumulo.pipeline import transform

    trips = pd.concat(pd.read_parquet(p) for p in sorted(path.glob("*.parquet")))
    return transform(trips, zones())["by_borough_hour"]


def _load(avg: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in avg)


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _pipeline(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    """(b): the demo pipeline through cumulo, raw dask on the same and on its own cluster, and pandas."""
    import dask
    from distributed import Client, LocalCluster

    import cumulo
    from cumulo import datasets, pipeline

    data = work / "trips"
    times: dict[str, list[float]] = {"cumulo": [], "raw dask, same cluster": [], "raw dask, own LocalCluster": [],
                                     "pandas, one core": []}
    with cumulo.connect(workers=2, threads_per_worker=1) as cluster:
        datasets.taxi(data, rows=args.rows, partitions=args.partitions, client=cluster.client)
        raw_client = Client(cluster.client.scheduler.address, security=cluster.client.security, set_as_default=False)
        plain = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
        plain_client = Client(plain, set_as_default=False)
        try:
            # warm every variant once (imports on workers, file cache)
            pipeline.run(data)
            with dask.config.set(scheduler=raw_client):
                pipeline.run(data)
            with dask.config.set(scheduler=plain_client):
                pipeline.run(data)
            pandas_pipeline(data)
            for _ in range(args.repeats):
                times["cumulo"].append(_timed(lambda: pipeline.run(data)))
                with dask.config.set(scheduler=raw_client):
                    times["raw dask, same cluster"].append(_timed(lambda: pipeline.run(data)))
                with dask.config.set(scheduler=plain_client):
                    times["raw dask, own LocalCluster"].append(_timed(lambda: pipeline.run(data)))
                times["pandas, one core"].append(_timed(lambda: pandas_pipeline(data)))
                print("pipeline", {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
        finally:
            raw_client.close()
            plain_client.close()
            plain.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--connect-repeats", type=int, default=7, help="alternating fresh processes per variant")
    parser.add_argument("--skip-pipeline", action="store_true", help="only (a): connect, first result, close")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "core.md"))
    args = parser.parse_args()

    import dask

    work = Path(tempfile.mkdtemp(prefix="cumulo-bench-"))
    env = {**os.environ, "CUMULO_REGISTRY": str(work / "registry.db")}
    os.environ["CUMULO_REGISTRY"] = env["CUMULO_REGISTRY"]
    # as installed: bytecode written once (the untimed first run) and read by every later process
    installed = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"} | {
        "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    # as this machine runs an editable cumulo: site-packages' bytecode is read, none is written for the source tree
    no_cache = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"} | {"PYTHONDONTWRITEBYTECODE": "1"}

    # (a) connect to first result, fresh interpreters, alternating
    variants = {
        "cumulo.connect()": (CONNECT_CUMULO, installed),
        "LocalCluster + Client": (CONNECT_RAW, installed),
        f"cumulo.connect(), {COMPILED}": (CONNECT_CUMULO, no_cache),
        f"LocalCluster + Client, {COMPILED}": (CONNECT_RAW, no_cache),
    }
    connect: dict[str, list[float]] = {k: [] for k in variants}
    whole: dict[str, list[float]] = {k: [] for k in variants}
    for code, child_env in variants.values():  # untimed: fills the bytecode cache, warms the page cache
        _fresh(code, child_env)
    load = [os.getloadavg()]
    for _ in range(args.connect_repeats):
        for name, (code, child_env) in variants.items():
            first, total = _fresh(code, child_env)
            connect[name].append(first)
            whole[name].append(total)
        print("connect", {k: (round(v[-1], 3), round(whole[k][-1], 3)) for k, v in connect.items()}, flush=True)
    load.append(os.getloadavg())

    # (b) pipeline
    times = {} if args.skip_pipeline else _pipeline(args, work)
    med_c = {k: statistics.median(v) for k, v in connect.items()}
    med_w = {k: statistics.median(v) for k, v in whole.items()}
    med_p = {k: statistics.median(v) for k, v in times.items()}
    command = (f"python benchmarks/bench_core.py --rows {args.rows} --repeats {args.repeats} "
               f"--connect-repeats {args.connect_repeats}" + (" --skip-pipeline" if args.skip_pipeline else ""))
    lines = [
        "# cumulo core benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, dask {dask.__version__}; medians of alternating runs. "
        f"Command: `{command}`.",
        "",
        f"## (a) connect, first result, close (fresh interpreter, 2 workers x 1 thread, TLS on for cumulo; "
        f"{args.connect_repeats} alternating runs each)",
        "",
        "Ratios are against LocalCluster + Client under the same bytecode condition; the paired ratio is the "
        "median over rounds of (variant / raw run of the same round), which cancels drift. Load average "
        f"(1, 5, 15 min) before: {_load(load[0])}; after: {_load(load[1])}.",
        "",
        "| variant | to first result: median s | ratio | whole process: median s | ratio | whole: paired ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, v in med_c.items():
        raw = "LocalCluster + Client" + (f", {COMPILED}" if k.endswith(COMPILED) else "")
        paired = statistics.median(a / b for a, b in zip(whole[k], whole[raw], strict=True))
        lines.append(f"| {k} | {v:.3f} | {v / med_c[raw]:.3f} | {med_w[k]:.3f} | {med_w[k] / med_w[raw]:.3f} "
                     f"| {paired:.3f} |")
    lines += [
        "",
        f"## (b) demo pipeline, {args.rows:,} rows in {args.partitions} Parquet files (2 workers x 1 thread)",
        "",
        "| variant | median s | ratio vs raw dask (same cluster) |",
        "|---|---:|---:|",
    ]
    if med_p:
        raw_p = med_p["raw dask, same cluster"]
        lines += [f"| {k} | {v:.3f} | {v / raw_p:.3f} |" for k, v in med_p.items()]
    else:
        lines += ["| (not run: --skip-pipeline) | | |"]
    lines += ["", "Aims: pipeline overhead ratio <= 1.05 against raw dask; the whole connect-result-close process <= 1.1x raw.", ""]
    report = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
