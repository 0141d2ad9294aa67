"""Where a fresh process's ``cumulo.connect()`` -> first result -> ``close()`` spends its time, per phase.

Companion of bench_core.py (a): each run is a fresh interpreter that wraps timers
around the steps of a local connect (cumulo's own and distributed's) and prints
them; raw ``LocalCluster`` + ``Client`` runs alternate with it, timed the same
way. The report gives the median milliseconds of each phase. The children get a
bytecode cache as an installed package has (see bench_core.py). Usage:

    python benchmarks/connect_phases.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

#: (module, qualified name, label) of the steps timed in the child; a name that is gone is skipped. The
#: distributed steps are the same in both variants (cumulo's launch and connect wrap them).
STEPS = [
    ("cumulo.config", "validate", "config.validate (every provider's section)"),
    ("cumulo.life.lifecycle", "Lifecycle.begin", "registry row written"),
    ("cumulo.security.local_security", "create_local_tls", "per-cluster CA and certificates"),
    ("distributed.deploy.spec", "SpecCluster._start", "LocalCluster start"),
    ("distributed.client", "Client._start", "client connect"),
    ("cumulo.starting", "Starting._describe_and_meter", "version probe + ledger install"),
    ("cumulo.starting", "Starting._mark_running", "mark running + watchdog"),
]

CHILD = textwrap.dedent(
    """
    import time; T0 = time.perf_counter()
    import functools, importlib, inspect, json, sys
    PHASES = {}

    def wrap(module, qual, label):
        try:
            owner = importlib.import_module(module)
            *path, name = qual.split(".")
            for part in path:
                owner = getattr(owner, part)
            fn = getattr(owner, name)
        except (ImportError, AttributeError):
            return
        def add(start):
            PHASES[label] = PHASES.get(label, 0.0) + time.perf_counter() - start
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def timed(*a, **k):
                start = time.perf_counter()
                try:
                    return await fn(*a, **k)
                finally:
                    add(start)
        else:
            @functools.wraps(fn)
            def timed(*a, **k):
                start = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    add(start)
        setattr(owner, name, timed)

    if __name__ == "__main__":
        cumulo = sys.argv[1] == "cumulo"
        if cumulo:
            import cumulo as c
        else:
            from distributed import Client, LocalCluster
        PHASES["import"] = time.perf_counter() - T0
        t = time.perf_counter()
        if cumulo:
            import cumulo.providers.local  # imported by connect() anyway: counted in its own phase
        PHASES["local provider + cryptography import"] = time.perf_counter() - t
        for step in json.loads(sys.argv[2]):
            wrap(*step)
        t = time.perf_counter()
        if cumulo:
            cluster = c.connect(workers=2, threads_per_worker=1)
            client = cluster.client
        else:
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0")
            client = Client(cluster)
        PHASES["connect (all of it)"] = time.perf_counter() - t
        t = time.perf_counter()
        assert client.submit(sum, range(10)).result() == 45
        PHASES["first small result"] = time.perf_counter() - t
        t = time.perf_counter()
        if cumulo:
            cluster.close()
        else:
            client.close(); cluster.close()
        PHASES["close"] = time.perf_counter() - t
        print(json.dumps(PHASES))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cumulo-phases-"))
    script = work / "child.py"  # a file, not -c: spawned workers re-import the main module by path
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {
        "PYTHONPYCACHEPREFIX": str(work / "pycache"), "CUMULO_REGISTRY": str(work / "registry.db")}
    steps = json.dumps(STEPS)
    runs: dict[str, list[dict[str, float]]] = {"cumulo": [], "raw": []}
    load = [os.getloadavg()]
    for i in range(args.repeats + 1):  # the first round fills the bytecode cache and is not counted
        for variant in runs:
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, str(script), variant, steps], capture_output=True, text=True,
                                  env=env, timeout=300)
            whole = time.perf_counter() - t0
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            if i:
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]) | {"whole process": whole})
    load.append(os.getloadavg())
    labels = list(dict.fromkeys(k for r in runs["cumulo"] + runs["raw"] for k in r))
    print(f"Command: `python benchmarks/connect_phases.py --repeats {args.repeats}`; load average before "
          f"{load[0][0]:.2f}, after {load[1][0]:.2f}; medians of {args.repeats} alternating runs, ms.\n")
    print("| phase | cumulo ms | raw dask ms |\n|---|---:|---:|")
    for label in labels:
        cells = [f"{statistics.median(r.get(label, 0.0) for r in runs[v]) * 1000:.0f}" for v in runs]
        print(f"| {label} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
