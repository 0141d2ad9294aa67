"""What streaming AWS's price list costs on a small machine, measured side by side in one run.

`cumulo prices --refresh` reads AWS's public EC2 price list file of each region (pricelist.py). Those files
are large (every type, operating system, tenancy and term of a region), so cumulo streams the file and tests
each line as bytes for an on-demand row of a GPU family before parsing it. This benchmark serves one
synthetic file of ``--mb`` MB (rows as tests/aws_price_emulator.py writes them: the real column layout,
mostly non-GPU types and non-on-demand terms, as in the real file) on loopback, then reads it:

1. cumulo's reader (``pricelist.on_demand_rows`` through httpx, as a refresh does);
2. the same download, every row parsed with ``csv.DictReader`` (what most price-list scrapers do);
3. the download alone (bytes read and thrown away): the floor both share.

Rounds interleave 1/2/3; medians and their ratios.

Run:  .venv/bin/python benchmarks/bench_aws_pricelist.py [--mb 300] [--rounds 3]
Writes benchmarks/results/aws_pricelist.md (and prints it).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import statistics
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "sdk"))

import dask  # noqa: E402
import httpx  # noqa: E402

from cumulo.providers.aws import pricelist  # noqa: E402
from tests import aws_price_emulator as emu  # noqa: E402
from tests.price_emulator import LoopbackHTTP  # noqa: E402

GPU_TYPES = {"g4dn.xlarge": 0.526, "g5.xlarge": 1.006, "g5.12xlarge": 5.672, "g6.xlarge": 0.8048,
             "p4de.24xlarge": 40.9657, "p5e.48xlarge": 80.0}


def synthetic_file(mb: int) -> bytes:
    """A price list of about ``mb`` MB: the GPU types, and made-up non-GPU types to fill the rest."""
    head = emu.price_list("us-east-1", GPU_TYPES)
    buf = io.StringIO()
    out = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    i = 0
    while buf.tell() + len(head) < mb * 1_000_000:
        itype = f"m9x{i}.large"
        emu.SHAPES[itype] = (0, 2, "8 GiB", "NA")
        for r in emu._rows("us-east-1", itype, 0.1):
            out.writerow([r.get(c, "") for c in emu.HEADER])
        i += 1
    return head + buf.getvalue().encode()


class FileServer(LoopbackHTTP):
    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                view = memoryview(body)
                for start in range(0, len(body), 1 << 20):
                    self.wfile.write(view[start:start + (1 << 20)])

        super().__init__(Handler)
        self.url = f"{self.base}/offers/v1.0/aws/AmazonEC2/current/{{region}}/index.csv"


def cumulo_reader(client: httpx.Client, url: str) -> int:
    with dask.config.set({"cumulo.aws.price-list-url": url}):
        return len(pricelist.on_demand_rows(client, "us-east-1", "2026-12-07"))


def dictreader(client: httpx.Client, url: str) -> int:
    found = 0
    with client.stream("GET", url.replace("{region}", "us-east-1")) as resp:
        lines = resp.iter_lines()
        for _ in range(5):
            next(lines)
        for row in csv.DictReader(lines):
            if (row["TermType"] == "OnDemand" and row["Operating System"] == "Linux" and row["Tenancy"] == "Shared"
                    and row["GPU"] not in ("NA", "") and row["CapacityStatus"] == "Used"):
                found += 1
    return found


def download_only(client: httpx.Client, url: str) -> int:
    with client.stream("GET", url.replace("{region}", "us-east-1")) as resp:
        return sum(len(c) for c in resp.iter_bytes())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    body = synthetic_file(args.mb)
    lines = body.count(b"\n")
    ways = {"cumulo (byte test, then parse)": cumulo_reader, "csv.DictReader on every row": dictreader,
            "download only": download_only}
    times: dict[str, list[float]] = {k: [] for k in ways}
    results: dict[str, int] = {}
    with FileServer(body) as server, httpx.Client(timeout=60) as client:
        for _ in range(args.rounds):
            for name, way in ways.items():
                t0 = time.perf_counter()
                results[name] = way(client, server.url)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["download only"]
    rows = [f"| {k} | {med[k]:.2f} | {len(body) / 1e6 / med[k]:.0f} | {med[k] / floor:.2f} |"
            for k in ways]
    report = "\n".join([
        "# Streaming AWS's price list (`cumulo prices --refresh`)", "",
        f"One synthetic us-east-1 EC2 price list file of {len(body) / 1e6:.0f} MB ({lines:,} lines, the real "
        "column layout; tests/aws_price_emulator.py's rows) served on loopback, read "
        f"{args.rounds} times each way, interleaved. {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{platform.machine()}. Medians.", "",
        "| reader | s | MB/s | x download |", "|---|---|---|---|", *rows, "",
        f"GPU rows found: cumulo {results['cumulo (byte test, then parse)']} (the plain on-demand Linux hour of "
        f"each of {len(GPU_TYPES)} types); DictReader's rough filter {results['csv.DictReader on every row']}.",
        "", "The synthetic file is harder than AWS's: 7 of its 8 rows per type are on-demand terms (the real "
        "file also carries the reserved terms, several rows per on-demand one), and no compression (AWS's CDN "
        "gzips; httpx inflates it as it streams, which costs CPU time of its own). Most connections download "
        "slower than cumulo's reader reads: a refresh takes about as long as downloading the region's file, and "
        "keeps only the matching rows.",
        "", "Run: `.venv/bin/python benchmarks/bench_aws_pricelist.py --mb "
        f"{args.mb} --rounds {args.rounds}`", "",
    ])
    (HERE / "results" / "aws_pricelist.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
