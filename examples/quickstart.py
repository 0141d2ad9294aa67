"""The quickstart as a script: attach a cluster, generate taxi trips on it, run the pipeline, close.

    python examples/quickstart.py [--rows 400000]

``cumulo.connect("local")`` starts the embedded default on this machine: CUDA workers and the cuDF
backend when NVML reports GPUs, otherwise CPU workers and pandas; the same code runs on both. The
notebook notebooks/quickstart.ipynb shows the same steps cell by cell.
"""

from __future__ import annotations

import argparse
import tempfile

import cumulo
from cumulo import datasets, pipeline


def main(rows: int = 400_000) -> None:
    with cumulo.connect("local", name="quickstart") as cluster, tempfile.TemporaryDirectory(prefix="taxi-") as tmp:
        print(cluster)
        print("backend:", cluster.backend)
        path = datasets.taxi(tmp, rows=rows, partitions=8, client=cluster.client)
        result = pipeline.run(path)
        print(f"kept {result.rows_kept:,} of {result.rows_in:,} trips")
        print(result.by_borough_hour.head(10).round(3).to_string())
        print(result.hourly_windows.sort_values("trips", ascending=False).head(5).to_string())
        print(cumulo.clusters()[["name", "provider", "workers", "backend", "state"]].to_string(index=False))
    print(f"cluster {cluster.name}: {cluster.status}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    main(parser.parse_args().rows)
