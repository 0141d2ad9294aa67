"""The ``cumulo`` command: every subcommand (demo, ls, down, reap, usage, prices) lives here.

Each handler is thin: it parses, calls the module that owns the idea
(inventory, reaper, metering, catalog), and prints. Errors from cumulo's
hierarchy print their message, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence

from dask.utils import format_bytes, format_time

from .exceptions import CumuloError

__all__ = ["build_parser", "main"]


def _demo(args: argparse.Namespace) -> int:
    # heavy: each subcommand imports what it needs, so that `cumulo --help` stays fast
    import cumulo
    from cumulo import config, datasets, pipeline

    rows = args.rows or config.get("demo.rows")
    partitions = args.partitions or config.get("demo.partitions")
    started = time.perf_counter()
    print("cumulo demo: starting the default cluster on this machine ...", flush=True)
    with cumulo.connect(workers=args.workers, name=args.name) as cluster:
        info = cluster.info()
        print(f"  cluster {cluster.name}: {info['workers']} workers, {info['threads']} threads, "
              f"{format_bytes(info['memory'])}, GPUs: {info['gpus'] or 'none'}, backend: {cluster.backend}")
        print(f"  dashboard: {cluster.dashboard_link}")
        with tempfile.TemporaryDirectory(prefix="cumulo-demo-") as tmp:
            t0 = time.perf_counter()
            datasets.taxi(tmp, rows=rows, partitions=partitions, client=cluster.client)
            gen = time.perf_counter() - t0
            print(f"  generated {rows:,} synthetic taxi trips in {partitions} Parquet files ({format_time(gen)})")
            t0 = time.perf_counter()
            result = pipeline.run(tmp)
            wall = time.perf_counter() - t0
        print(f"\npipeline: kept {result.rows_kept:,} of {result.rows_in:,} trips "
              "(filter -> join zones -> groupby borough/hour -> 1h windows)")
        print("\nby borough and hour (first rows):")
        print(result.by_borough_hour.head(8).round(3).to_string())
        print("\nbusiest one-hour windows:")
        print(result.hourly_windows.sort_values("trips", ascending=False).head(3).to_string())
        print(f"\nbackend: {cluster.backend}   workers: {info['workers']}   pipeline wall time: {format_time(wall)}")
        print(_usage_line(cluster))
    print(f"cluster {cluster.name} closed; total {format_time(time.perf_counter() - started)}")
    return 0


def _usage_line(cluster: object) -> str:
    """Cost and usage of the cluster so far, from the usage ledger when it is installed."""
    usage = getattr(cluster, "usage", None)
    if usage is not None:
        return str(usage)
    return "cost: no rate set for local clusters (set cumulo.cost.* to price your own hardware)"


def _ls(args: argparse.Namespace) -> int:
    # heavy: each subcommand imports what it needs, so that `cumulo --help` stays fast
    import pandas as pd

    import cumulo

    table = cumulo.clusters(include_closed=not args.open, since=None if args.all else "24h")
    if table.empty:
        print("no clusters" + (" open" if args.open else " in the last 24h (use --all for history)"))
        return 0
    if args.dashboards:
        from cumulo.display import record_dashboard  # heavy: the providers, only for --dashboards
        from cumulo.life.registry import Registry  # heavy: sqlite, only for --dashboards

        registry = Registry()
        table["dashboard"] = [record_dashboard(registry.get(i)) for i in table["id"]]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 120):
        print(table.drop(columns=["created"]).to_string(index=False, na_rep="-"))
    return 0


def _down(args: argparse.Namespace) -> int:
    from cumulo.life.inventory import stop  # heavy (distributed, the providers): only for `cumulo down`

    if not args.name and not args.all:
        print("cumulo down: name a cluster (see `cumulo ls`) or pass --all", file=sys.stderr)
        return 2
    report = stop(args.name, all=args.all)
    if not report.stopped and not report.failed:
        print("no open clusters")
    for record in report.stopped:
        print(f"stopped {record.name} ({record.provider}, {record.address})")
    for record, why in report.failed:
        print(f"FAILED to stop {record.name} ({record.provider}): {why}; it may still bill: run "
              f"`cumulo down {record.name}` again", file=sys.stderr)
    return 1 if report.failed else 0


def _reap(args: argparse.Namespace) -> int:
    from cumulo.life.reaper import sweep  # heavy (distributed, the providers): only for `cumulo reap`

    done = sweep(dry_run=args.dry_run, terminate_unknown=args.terminate_unknown)
    if not done.clusters:
        print("nothing to reap")
    total = 0.0
    for r in done.clusters:
        print(r.text())
        total += r.cost or 0.0
    if done.clusters:
        print(f"total {'that would be ' if args.dry_run else ''}stopped: {len(done.clusters)} cluster(s), "
              f"${total:,.2f} spent")
    for provider, why in sorted(done.unchecked.items()):
        print(f"{provider}: not checked for orphaned resources ({why})")
    for orphan in done.orphans:
        print(orphan.line())
    if any(not o.ours for o in done.orphans) and not args.terminate_unknown:
        print("resources marked 'reported' were not created by this installation (another machine, venv or "
              "teammate may be using them): they were left alone; pass --terminate-unknown to stop them too")
    return 1 if done.failed else 0


def _usage(args: argparse.Namespace) -> int:
    # heavy: each subcommand imports what it needs, so that `cumulo --help` stays fast
    from cumulo.aio import blocking
    from cumulo.cost.metering import (
        Spend,
        Usage,
        attribution,
        cells_text,
        fetch_ledger_async,
        ranked,
        spend_of,
        stored_usage_text,
        usage_text,
    )
    from cumulo.exceptions import ClusterNotFound
    from cumulo.life.inventory import find
    from cumulo.life.registry import Registry
    from cumulo.providers import get_provider

    registry = Registry()
    rec = find(args.name, registry)
    if rec is None:
        raise ClusterNotFound(f"no cluster named {args.name!r} (nor with that id) in the registry; see `cumulo ls`")
    ledger = None
    if rec.is_open and rec.address:
        ledger = blocking(fetch_ledger_async(rec.address, get_provider(rec.provider).security(rec)))
    spend = spend_of(rec, ledger)
    if spend.amount is None and rec.cost is not None:
        spend = Spend(rec.cost, rec.rate_per_hour, "last figure recorded by its kernel")
    state = "stop failed: may still bill" if rec.may_bill else rec.state
    print(f"{rec.name} ({rec.provider}, {state}): spend {spend.text()}")
    print(f"  id {rec.id}, created {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(rec.created))}"
          + ("" if rec.closed is None else f", closed {time.strftime('%H:%M:%S', time.localtime(rec.closed))}"))
    from cumulo.envsync import recorded  # heavy: only for `cumulo usage`

    environment = recorded(registry, rec.id)
    if environment:
        print(f"  environment: {environment}")
    if ledger is None:
        if rec.is_open:
            print("  no ledger reachable: its scheduler did not answer")
        else:
            print(stored_usage_text(rec))
        return 0
    print(usage_text(Usage.of_record(rec, registry).summary(ledger)))
    print(cells_text(ranked(attribution(ledger, rec, spend=spend)), spend.amount))
    return 0


def _share(args: argparse.Namespace) -> int:
    from cumulo.share import share  # heavy: only for `cumulo share`

    print(share(args.notebook, out=args.output, strip_outputs=args.strip_outputs).text())
    return 0


def _run_notebook(args: argparse.Namespace) -> int:
    from cumulo.run import parse_parameters, run_notebook  # heavy (nbclient): only for `cumulo run`

    report = run_notebook(args.notebook, on=args.on, parameters=parse_parameters(args.parameter),
                          out=args.output, timeout=args.timeout, kernel=args.kernel)
    if report.failure:
        print(f"cumulo run: {report.failure}", file=sys.stderr, flush=True)
    print(report.text())  # its last line says where the executed copy is
    return report.exit_code


def _prices(args: argparse.Namespace) -> int:
    from cumulo.cost import catalog  # heavy (pandas): only for `cumulo prices`

    if args.refresh:
        print(catalog.refresh().text())
    print(catalog.report_text(gpu=args.gpu, provider=args.provider, region=args.region))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="cumulo", description="Dask clusters from notebooks, with their cost.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="start the default cluster, run the taxi pipeline, show cost, close")
    demo.add_argument("--rows", type=int, help="rows of synthetic trips (default: cumulo.demo.rows)")
    demo.add_argument("--partitions", type=int, help="Parquet partitions (default: cumulo.demo.partitions)")
    demo.add_argument("--workers", type=int, help="worker processes (default: sized to the machine)")
    demo.add_argument("--name", help="cluster name (default: generated)")
    demo.set_defaults(func=_demo)

    ls = sub.add_parser("ls", help="list your clusters (open, and closed in the last 24h)")
    ls.add_argument("--open", action="store_true", help="only open clusters")
    ls.add_argument("--all", action="store_true", help="all history, not just the last 24h")
    ls.add_argument("--dashboards", action="store_true",
                    help="add each open cluster's Dask dashboard link (through the Jupyter server's route when run "
                         "in one of its terminals or kernels)")
    ls.set_defaults(func=_ls)

    down = sub.add_parser("down", help="stop a cluster by name, or all of them")
    down.add_argument("name", nargs="?", help="cluster name or id (see `cumulo ls`)")
    down.add_argument("--all", action="store_true", help="stop every open cluster")
    down.set_defaults(func=_down)

    reap = sub.add_parser(
        "reap", help="stop clusters whose kernel is gone (lease, budget, idle) and cloud resources nobody owns")
    reap.add_argument("--dry-run", action="store_true", help="say what would be stopped, stop nothing")
    reap.add_argument("--terminate-unknown", action="store_true",
                      help="also stop cumulo-named resources this installation did not create (careful: "
                           "another machine or teammate may be using them)")
    reap.set_defaults(func=_reap)

    usage = sub.add_parser("usage", help="what a cluster used and what it cost")
    usage.add_argument("name", help="cluster name or id (see `cumulo ls`)")
    usage.set_defaults(func=_usage)

    share = sub.add_parser("share", help="write a copy of a notebook to send: secrets removed, the cluster spec "
                                         "and the last run's cost embedded (docs/sharing.md)")
    share.add_argument("notebook", help="the .ipynb file")
    share.add_argument("-o", "--output", help="where to write the copy (default: NAME.shared.ipynb beside it)")
    share.add_argument("--strip-outputs", action="store_true", help="drop every output and execution count too")
    share.set_defaults(func=_share)

    run = sub.add_parser("run", help="execute a notebook headless, print its wall time and cost, always tear "
                                     "down its clusters (docs/sharing.md)")
    run.add_argument("notebook", help="the .ipynb file")
    run.add_argument("--on", metavar="SPEC", help="launch every connect() of the notebook on SPEC: 'local', "
                                                  "'lambda,gpu=A10,workers=2', a .json spec or a shared notebook")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                     help="set a parameter (after the cell tagged 'parameters'); repeatable")
    run.add_argument("-o", "--output", metavar="FOLDER_OR_FILE",
                     help="folder for the executed copy NAME.run.ipynb, or a .ipynb file (default: NAME.run.ipynb "
                          "beside the notebook; git ignores *.run.ipynb)")
    run.add_argument("--timeout", type=float, help="seconds each cell may run (default: no limit)")
    run.add_argument("--kernel", help="kernel name (default: the notebook's, else python3)")
    run.set_defaults(func=_run_notebook)

    prices = sub.add_parser("prices", help="GPU offers and prices, cheapest $/GPU-hour first")
    prices.add_argument("--gpu", help="GPU model, e.g. H100, A100, L4")
    prices.add_argument("--provider", help="lambda, aws, azure or gcp")
    prices.add_argument("--region", help="region, e.g. us-east-1 or eastus")
    prices.add_argument("--refresh", action="store_true", help="fetch live prices (Lambda needs LAMBDA_API_KEY) first")
    prices.set_defaults(func=_prices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cumulo`` command; errors print their message, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CumuloError as exc:
        print(f"cumulo {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
