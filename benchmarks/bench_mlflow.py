"""What MLflow autolog adds to a notebook cell, measured side by side in one run.

A real ``mlflow server`` (SQLite store, artifacts in a temp folder) on 127.0.0.1, one local
cluster (1 worker process), an active MLflow run, and cumulo's own per-cell hooks
(``_pre_run_cell`` / ``_post_run_cell`` of cumulo.cost.cellcost, as ``%load_ext cumulo``
registers them), called directly as bench_metering.py does:

1. a cell that does not touch the cluster: the hook pair, autolog off vs on;
2. a cell that submits one task: the post-cell hook (its mark and one RPC, then, with
   autolog, the cell's metrics queued for the tracking server), autolog off vs on;
3. autolog's listener alone in a touching cell (``Autolog.cell``: the active run, the
   metrics, one queued item), timed directly;
4. how long the queued values take to reach the server (the outbox's flush), which no
   cell waits for.

Off and on run in alternating blocks (``--blocks``), so that drift in the machine's load
falls on both; medians and p99 per cell, and the difference of the medians.

Run:  .venv/bin/python benchmarks/bench_mlflow.py [--quiet 400] [--touching 40] [--blocks 4]
Writes benchmarks/results/mlflow.md (and prints it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent


def inc(x: int) -> int:
    return x + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'm.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                return proc, uri
        except httpx.TransportError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not start")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def run(quiet: int, touching: int, blocks: int, uri: str, cell_line: bool) -> dict[str, object]:
    import dask
    import mlflow

    import cumulo
    from cumulo.cost import cellcost

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    times: dict[str, list[float]] = {"quiet_off": [], "quiet_on": [], "touch_off": [], "touch_on": [], "listener": []}
    flush: list[float] = []
    count = [0]

    def cell(submit: bool) -> float:
        count[0] += 1
        cellcost._pre_run_cell(None)
        future = cluster.client.submit(inc, count[0], pure=False) if submit else None
        with contextlib.redirect_stdout(io.StringIO()):  # the cost line, printed outside IPython
            t0 = time.perf_counter()
            cellcost._post_run_cell(SimpleNamespace(execution_count=count[0]))
            spent = time.perf_counter() - t0
        if future is not None:
            future.result()
        time.sleep(0.002)  # cells are not back to back
        return spent

    with dask.config.set({"cumulo.widgets.cell-line-on-connect": False, "cumulo.widgets.cell-line": cell_line,
                          "cumulo.cost.rate-per-worker-hour": 1.0}):
        cluster = cumulo.connect(workers=1, threads_per_worker=1)
        try:
            cellcost._install_tagging()
            cellcost.track(cluster)
            with mlflow.start_run():
                for block in range(blocks):
                    for on in ((False, True) if block % 2 == 0 else (True, False)):
                        log = cumulo.mlflow.autolog() if on else None
                        key = "on" if on else "off"
                        times[f"quiet_{key}"] += [cell(False) for _ in range(quiet)]
                        times[f"touch_{key}"] += [cell(True) for _ in range(touching)]
                        if log is not None:
                            t0 = time.perf_counter()
                            assert log.outbox.flush(120)
                            flush.append(time.perf_counter() - t0)
                            row = {"task_seconds": 0.01, "gpu_seconds": 0.0, "energy_j": None}
                            spend = SimpleNamespace(amount=0.001)
                            for _ in range(touching):
                                t0 = time.perf_counter()
                                log.cell(cluster, "bench/0", 0, row, spend)
                                times["listener"].append(time.perf_counter() - t0)
                            assert log.outbox.flush(120)
                            sent = log.outbox.sent
                            cumulo.mlflow.autolog(disable=True)
                            assert sent > 0
        finally:
            cluster.close()
            cumulo.mlflow.autolog(disable=True)
    out: dict[str, object] = {k: (statistics_of(v)) for k, v in times.items()}
    out["flush"] = statistics_of(flush)
    return out


def statistics_of(values: list[float]) -> dict[str, float]:
    import statistics

    return {"median": statistics.median(values), "p99": pct(values, 0.99), "n": float(len(values))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", type=int, default=400, help="cells not touching the cluster, per block")
    parser.add_argument("--touching", type=int, default=40, help="cells submitting a task, per block")
    parser.add_argument("--blocks", type=int, default=4, help="alternating off/on blocks")
    parser.add_argument("--cell-line", choices=["on", "off"], default="on",
                        help="cumulo's per-cell cost line (on by default in notebooks)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cumulo-bench-mlflow-"))
    os.environ.setdefault("CUMULO_REGISTRY", str(root / "registry.db"))
    proc, uri = start_server(root)
    try:
        load0 = os.getloadavg()[0]
        r = run(args.quiet, args.touching, args.blocks, uri, args.cell_line == "on")
        load1 = os.getloadavg()[0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    def us(d: object, key: str = "median") -> str:
        return f"{d[key] * 1e6:,.0f} us"  # type: ignore[index]

    q_off, q_on, t_off, t_on = r["quiet_off"], r["quiet_on"], r["touch_off"], r["touch_on"]
    quiet_delta = q_on["median"] - q_off["median"]  # type: ignore[index]
    touch_delta = t_on["median"] - t_off["median"]  # type: ignore[index]
    lines = [
        "# cumulo MLflow autolog benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.platform()}; {os.cpu_count()} CPUs; "
        f"python {platform.python_version()}; MLflow tracking server (`mlflow server`, SQLite) on 127.0.0.1",
        f"Command: `.venv/bin/python benchmarks/bench_mlflow.py --quiet {args.quiet} --touching {args.touching} "
        f"--blocks {args.blocks} --cell-line {args.cell_line}`; 1-minute load average {load0:.1f} before, "
        f"{load1:.1f} after",
        "",
        "| measure | autolog off | autolog on | added (difference of medians) | aim |",
        "|---|---|---|---|---|",
        f"| cell not touching the cluster: per-cell hooks, median / p99 (n={int(q_on['n'])} each) | "  # type: ignore[index]
        f"{us(q_off)} / {us(q_off, 'p99')} | {us(q_on)} / {us(q_on, 'p99')} | **{quiet_delta * 1e6:+,.1f} us** | < 0.1 ms |",
        f"| cell submitting one task: post-cell hook (mark, one RPC, metrics queued), median / p99 "
        f"(n={int(t_on['n'])} each) | {us(t_off)} / {us(t_off, 'p99')} | {us(t_on)} / {us(t_on, 'p99')} | "  # type: ignore[index]
        f"**{touch_delta * 1e3:+,.2f} ms** | < 5 ms |",
        f"| autolog's listener alone in a touching cell (`Autolog.cell`), median / p99 | | "
        f"{us(r['listener'])} / {us(r['listener'], 'p99')} | | |",
        f"| the values reaching the server after a block (outbox flush; no cell waits for it), median | | "
        f"{r['flush']['median'] * 1e3:,.0f} ms for {args.touching} cells | | |",  # type: ignore[index]
        "",
        "A cell that does not touch a cluster never reaches autolog (cumulo's post-cell hook stops before the "
        "listeners when the cell submitted nothing), so its difference is noise around zero. In a touching cell "
        "autolog adds the active run's lookup, the metrics and one queued item (the listener row), plus, with "
        "the cost line off (`--cell-line off`), the registry read for the cell's price that the line would "
        "have made anyway. The HTTP request to the tracking server runs in the outbox's thread, values of "
        "cells that come together in one request, so no cell waits for it; on 2 shared cores that thread's "
        "work still competes with the next cells for CPU, which is most of the difference.",
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "mlflow.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
