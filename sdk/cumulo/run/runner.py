"""``run_notebook``: read the notebook, run every cell in a fresh kernel, tear down, write the copy.

The run itself (:func:`_run`) executes the cells with nbclient under SIGINT/SIGTERM handlers
that cancel it, and whatever happens runs the teardown of :mod:`cumulo.run` in order
(:mod:`.kernel`, then :mod:`.leftovers`). :func:`run_notebook` prepares it (spec, parameters,
kernel, before anything starts), records the wall time, the cost and each cluster's spec
under the copy's ``metadata.cumulo`` and writes the executed copy, also after a failure or
an interruption.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..exceptions import CumuloError
from ..life.registry import Registry
from ..share import METADATA_KEY, METADATA_VERSION, _read, cluster_entry, estimate_line, last_run_line, run_summary
from .kernel import choose_kernel, close_kernel, execute_in, require_notebook_packages
from .leftovers import kill_group, owned_rows, stop_left_open
from .parameters import inject
from .report import RunReport, describe_cell
from .specs import embedded_specs, parse_on

#: The executed copy's suffix: ``NAME.run.ipynb`` (.gitignore and the gallery test skip it).
RUN_SUFFIX = ".run.ipynb"


def output_path(source: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Where ``cumulo run`` writes the executed copy of ``source``.

    ``out`` None: ``NAME.run.ipynb`` beside the source (git ignores ``*.run.ipynb`` and the
    gallery skips it, so a run never passes for a source); a folder (an existing one, or a
    path that does not end in .ipynb): ``NAME.run.ipynb`` in it; a ``.ipynb`` path: that file
    (the notebook's own path updates it in place). Running a copy again (``NAME.run.ipynb``)
    rewrites that copy rather than adding another ``.run``.
    """
    src = Path(source).expanduser()
    stem = src.name[: -len(RUN_SUFFIX)] if src.name.endswith(RUN_SUFFIX) else src.stem
    if out is None:
        return src.with_name(stem + RUN_SUFFIX)
    dest = Path(out).expanduser()
    if dest.suffix == ".ipynb" and not dest.is_dir():
        return dest
    return dest / (stem + RUN_SUFFIX)


async def _run(nb: Any, report: RunReport, *, kernel: str, cwd: Path, timeout: float | None,
               on: dict[str, Any] | None, named: dict[str, dict[str, Any]], injected: int | None,
               registry: Registry) -> None:
    # checked by require_notebook_packages before the run: missing, it is a MissingDependency
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    tearing_down = False

    def on_signal(name: str) -> None:
        if tearing_down:
            print(f"cumulo run: {name} received; still tearing down, please wait", file=sys.stderr, flush=True)
            return
        if report.interrupted is None:
            report.interrupted = name
            print(f"\ncumulo run: {name} received; stopping the notebook and its clusters ...", file=sys.stderr,
                  flush=True)
            main.cancel()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            handled.append(sig)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread: the caller handles signals

    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}}, shutdown_kernel="graceful")
    client.km = client.create_kernel_manager()
    pid: int | None = None
    pgid: int | None = None
    busy = True  # whether a cell may still be running in the kernel when teardown starts
    started = time.time()
    t0 = time.perf_counter()
    try:
        try:
            # the kernel records where we look, and names its cells after the notebook as Jupyter's would
            env = {**os.environ, "CUMULO_REGISTRY": str(registry.path),
                   "JPY_SESSION_NAME": str(report.source.resolve())}
            await client.async_start_new_kernel(cwd=str(cwd), env=env)
            provisioner = getattr(client.km, "provisioner", None)
            pid = getattr(provisioner, "pid", None)
            pgid = getattr(provisioner, "pgid", None)
            await client.async_start_new_kernel_client()
            client.reset_execution_trackers()
            if on is not None or named:
                setup = (f"import cumulo.run as _cumulo_run\n_cumulo_run.override_connect({on!r}, {named!r})\n"
                         "del _cumulo_run")
                if not await execute_in(client.kc, setup, 60.0):
                    raise CumuloError("the kernel did not take the cluster spec within 60s")
            for index, cell in enumerate(nb.cells):
                try:
                    await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                    if report.interrupted:  # nbclient turns our cancellation into DeadKernelError
                        break
                    number, label = describe_cell(nb, index, injected)
                    report.failed_cell = number
                    if isinstance(exc, CellExecutionError):
                        why = f"{exc.ename}: {exc.evalue}"
                    elif isinstance(exc, CellTimeoutError):
                        why = f"timed out after {timeout}s"
                    else:
                        why = "the kernel died"
                    raised = isinstance(exc, CellExecutionError)
                    report.failure = f"{label} raised {why}" if raised else f"{label}: {why}"
                    busy = isinstance(exc, CellTimeoutError)
                    break
            else:
                report.ok = True
                busy = False
            client.set_widgets_metadata()
        except asyncio.CancelledError:
            if report.interrupted is None:
                raise
        finally:
            report.wall_seconds = time.perf_counter() - t0
            tearing_down = True
            t1 = time.perf_counter()
            try:
                await close_kernel(client, pid, interrupt=busy)
                report.left_open = await stop_left_open(registry, pid, started)
                report.killed_processes = await asyncio.to_thread(kill_group, pgid)
            finally:
                report.teardown_seconds = time.perf_counter() - t1
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    rows = owned_rows(registry, pid, started)
    report.clusters = [cluster_entry(r) for r in sorted(rows, key=lambda r: r.created)]


def run_notebook(
    path: str | os.PathLike[str],
    *,
    on: str | dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
) -> RunReport:
    """Execute a notebook headless and tear down what it started (see :mod:`cumulo.run`).

    ``on``: a spec for ``--on`` (text as :func:`parse_on` reads it, or its result); ``out``:
    where the executed copy goes, a folder or a .ipynb file (:func:`output_path`; default
    ``<name>.run.ipynb`` beside it); ``timeout``: seconds per cell (None: no limit); ``cwd``: the
    kernel's directory (default: the notebook's). Returns a :class:`RunReport`; raises
    SpecError before starting anything when the notebook, the spec or a parameter is wrong, and
    MissingDependency (naming the pip line) when a package it needs is not installed.
    """
    require_notebook_packages()
    import nbformat  # only now: require_notebook_packages turned a missing one into a MissingDependency

    src = Path(path).expanduser()
    nb = _read(src)
    dest = output_path(src, out)
    spec = parse_on(on) if isinstance(on, str) else (dict(on) if on is not None else None)
    previous = nb.metadata.get(METADATA_KEY)
    line = last_run_line(previous)
    if line:
        print(f"cumulo run: {src.name}: {line}")
        if spec is None:
            print(f"cumulo run: {src.name}: {estimate_line(previous)}")
    named = {} if spec is not None else embedded_specs(previous)
    if spec is not None:
        print(f"cumulo run: running {src.name} on " + ", ".join(f"{k}={v}" for k, v in spec.items()))
    for name, fields in named.items():
        print(f"cumulo run: cluster {name!r} gets the spec the notebook carries: "
              + ", ".join(f"{k}={v}" for k, v in fields.items()))
    injected = inject(nb, parameters or {})
    registry = registry or Registry()
    report = RunReport(source=src, out=dest)
    kernel_name = choose_kernel(nb, kernel)
    try:
        asyncio.run(_run(nb, report, kernel=kernel_name, cwd=Path(cwd) if cwd else src.resolve().parent,
                         timeout=timeout, on=spec, named=named, injected=injected, registry=registry))
    except KeyboardInterrupt:  # a Ctrl-C before our handler was installed, or a second one
        report.interrupted = report.interrupted or "SIGINT"
    except Exception as exc:  # the kernel did not start, the --on spec did not take, ...
        report.failure = f"{type(exc).__name__}: {exc}"
    status = ("ok" if report.ok else f"interrupted ({report.interrupted})" if report.interrupted
              else f"failed at cell {report.failed_cell}" if report.failed_cell else "failed")
    report.summary = run_summary(report.clusters, wall_seconds=report.wall_seconds,
                                 date=datetime.now(UTC).date().isoformat(),
                                 source="cumulo run (clusters: the registry rows its kernel started)", status=status)
    if parameters:
        report.summary["parameters"] = {k: repr(v) for k, v in parameters.items()}
    if report.clusters:
        nb.metadata[METADATA_KEY] = {"version": METADATA_VERSION, "clusters": report.clusters,
                                     "last_run": report.summary}
    elif isinstance(previous, dict) and previous.get("clusters"):
        nb.metadata[METADATA_KEY] = previous  # ran without a cluster: keep what an earlier run recorded
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))
    return report
