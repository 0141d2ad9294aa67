"""Run a notebook headless: ``cumulo run NOTEBOOK.ipynb [--on SPEC] [-p key=value] [-o OUT]``.

:func:`run_notebook` executes every cell in a fresh kernel with nbclient, writes the executed
copy (also when a cell fails or the run is interrupted), prints the wall time and the cost, and
records both, with the spec of each cluster the notebook started, under the copy's
``metadata.cumulo`` (what ``cumulo share`` embeds and ``connect(spec_from=...)`` reads).

Parameters, papermill-style: ``-p rows=100000`` becomes ``rows = 100000`` in a cell injected
after the cell tagged ``parameters`` (at the top when there is none) and tagged
``injected-parameters``; values are Python literals, anything else is a string.

``--on SPEC`` (``local``, ``lambda,gpu=A10,workers=4``, a JSON file or another notebook whose
spec to use) makes every ``cumulo.connect(...)`` call of the notebook launch that spec: the
kernel's ``cumulo.connect`` is wrapped before the first cell (:func:`override_connect`), so the
provider and the fields SPEC names replace the notebook's own arguments; re-attaching by name and
connecting to an address are left alone. Without ``--on``, the specs the notebook carries
(``metadata.cumulo.clusters``, from an earlier run or a share) apply by cluster name: a
``connect(..., name="etl")`` call gets the spec recorded for ``etl`` (the same as its own arguments
unless that run used ``--on``); calls naming no recorded cluster keep their own arguments.

Teardown, always: on success, on a failing cell, on Ctrl-C (SIGINT) and on SIGTERM.

1. the kernel closes every cluster it started (``cumulo.cluster``'s at-exit closer, run as a
   last cell after interrupting whatever still runs);
2. the kernel is shut down (gracefully, then killed);
3. registry rows the kernel owned (found by its process id) that are still open are stopped
   from this process through the lifecycle (:func:`cumulo.inventory.stop_record`), and rows of
   clusters that died with the kernel are marked lost (:func:`cumulo.inventory.reconcile`);
4. whatever is left of the kernel's process group (it runs in its own session) is killed.

A row that could not be stopped is reported as "may still bill" and makes the exit status 1.
Exit status: 0 ok, 1 a cell failed (it is named) or a stop failed, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import CumuloError, MissingDependency, SpecError

if TYPE_CHECKING:
    from .registry import ClusterRecord, Registry

__all__ = ["RUN_SUFFIX", "RunReport", "output_path", "override_connect", "parse_on", "parse_parameters",
           "run_notebook"]

#: How long the kernel gets to close its clusters (a cloud cluster waits for confirmed termination).
TEARDOWN_TIMEOUT = 600.0
#: connect() keywords that are not spec fields (a call with only these and name= re-attaches).
_CONNECT_KEYWORDS = {"name", "security", "allow_insecure", "asynchronous", "registry", "confirm", "keep_alive"}
_EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
#: The executed copy's suffix: ``NAME.run.ipynb`` (.gitignore and the gallery test skip it).
RUN_SUFFIX = ".run.ipynb"
#: What ``cumulo run`` imports to read and execute a notebook (cumulo's core install brings them).
_NOTEBOOK_PACKAGES = ("nbformat", "nbclient")

_TEARDOWN = """\
import sys as _cumulo_sys
if "cumulo.cluster" in _cumulo_sys.modules:
    _cumulo_sys.modules["cumulo.cluster"].close_all()
"""


# -- what to run on, with what --------------------------------------------------------------


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def parse_parameters(items: list[str] | None) -> dict[str, Any]:
    """``["rows=1000", "name=etl"]`` -> ``{"rows": 1000, "name": "etl"}`` (values as Python literals)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SpecError(f"-p {item!r}: write -p NAME=VALUE, with NAME a Python identifier (e.g. -p rows=1000)")
        out[key] = _literal(value)
    return out


def parse_on(text: str) -> dict[str, Any]:
    """A spec for ``--on``: 'local', 'lambda,gpu=A10,workers=4', a .json file, or a notebook to take it from.

    Returns plain data with a ``provider`` key, validated as a ClusterSpec (SpecError otherwise).
    ``confirm=true`` is accepted too (it confirms a paid offer above the threshold).
    """
    from .providers import known_providers
    from .share import SPEC_FIELDS, from_notebook
    from .spec import DASK_ALIASES, ClusterSpec, did_you_mean

    path = Path(text).expanduser()
    if text.endswith(".ipynb"):
        return from_notebook(path).to_dict()
    if text.endswith(".json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SpecError(f"--on {text}: cannot read a JSON spec from it: {exc}") from exc
    else:
        provider, *pairs = [p.strip() for p in text.split(",") if p.strip()] or [""]
        data = {"provider": provider}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise SpecError(f"--on {text!r}: {pair!r} is not key=value (e.g. --on 'lambda,gpu=A10,workers=2')")
            data[key.strip()] = _literal(value)
    if not isinstance(data, dict):
        raise SpecError(f"--on {text}: a spec is an object of fields, e.g. {{\"provider\": \"local\", \"workers\": 2}}")
    data.setdefault("provider", "local")
    confirm = data.pop("confirm", None)
    data = {DASK_ALIASES.get(k, k): v for k, v in data.items()}  # n_workers=2 is workers=2, as in connect()
    unknown = sorted(set(data) - set(SPEC_FIELDS))
    if unknown:
        raise SpecError(f"--on {text!r}: unknown field(s) {', '.join(unknown)}"
                        f"{did_you_mean(unknown[0], SPEC_FIELDS)}; use {', '.join(SPEC_FIELDS)}")
    usable = [p for p in known_providers() if p != "address"]
    if data["provider"] not in known_providers():
        raise SpecError(f"--on {text!r}: unknown provider {data['provider']!r}"
                        f"{did_you_mean(data['provider'], usable)}; use one of {', '.join(usable)}")
    out = ClusterSpec.from_dict(data).to_dict()
    if confirm:
        out["confirm"] = True
    return out


def override_connect(spec: dict[str, Any] | None = None, named: dict[str, dict[str, Any]] | None = None) -> None:
    """In a kernel run by ``cumulo run``: make ``cumulo.connect(...)`` launch ``spec`` (``--on``), or, for a
    call naming a cluster in ``named`` (the specs a notebook carries, by cluster name), that cluster's spec.

    The provider and the fields the spec names replace the call's own; with another provider
    than the call's, its hardware arguments (gpu, instance type, region, ...) are dropped.
    Re-attaching by name, connecting to an address and ``spec_from=`` calls pass through.
    """
    import cumulo

    from . import cluster as cluster_module
    from .share import HARDWARE_FIELDS
    from .spec import DASK_ALIASES

    original = cluster_module.connect
    named = dict(named or {})

    @functools.wraps(original)
    def connect(target: str | None = None, **kwargs: Any) -> Any:
        reattach = target is None and kwargs.get("name") is not None and not set(kwargs) - _CONNECT_KEYWORDS
        if reattach or (isinstance(target, str) and "://" in target) or kwargs.get("spec_from") is not None:
            return original(target, **kwargs)
        chosen = spec if spec is not None else named.get(str(kwargs.get("name")))
        if chosen is None:
            return original(target, **kwargs)
        kwargs = {DASK_ALIASES.get(k, k): v for k, v in kwargs.items()}  # the notebook's n_workers= is workers=
        fields = dict(chosen)
        provider = fields.pop("provider", "local")
        if fields.pop("confirm", False):
            kwargs["confirm"] = True
        if (target or "local") != provider:
            kwargs = {k: v for k, v in kwargs.items() if k not in HARDWARE_FIELDS}
        kwargs.update(fields)
        return original(provider, **kwargs)

    cumulo.connect = connect  # type: ignore[assignment]


def _embedded(meta: Any) -> dict[str, dict[str, Any]]:
    """The cluster specs a notebook carries, by cluster name (what ``cumulo run`` or ``share`` recorded)."""
    from .share import SPEC_FIELDS

    out: dict[str, dict[str, Any]] = {}
    entries = meta.get("clusters") if isinstance(meta, dict) else None
    for entry in entries or ():
        spec = {k: v for k, v in dict(entry.get("spec") or {}).items() if k in SPEC_FIELDS}
        if entry.get("name") and spec.get("provider") not in (None, "address"):
            out[str(entry["name"])] = spec
    return out


def _inject(nb: Any, parameters: dict[str, Any]) -> int | None:
    """Put the parameters cell in place; return its index (None when there are no parameters)."""
    import nbformat

    nb.cells = [c for c in nb.cells if "injected-parameters" not in (c.metadata.get("tags") or [])]
    if not parameters:
        return None
    known: set[str] = set()
    where = 0
    for i, cell in enumerate(nb.cells):
        if "parameters" in (cell.metadata.get("tags") or []):
            where = i + 1
            try:
                tree = ast.parse(cell.source)
                known = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                         for t in node.targets if isinstance(t, ast.Name)}
            except SyntaxError:
                known = set()
            break
    unknown = sorted(set(parameters) - known)
    if unknown:
        what = "the cell tagged 'parameters'" if where else "the notebook (it has no cell tagged 'parameters')"
        print(f"cumulo run: note: {', '.join(unknown)} not assigned in {what}; injected anyway", file=sys.stderr)
    source = "# Parameters injected by `cumulo run`\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(where, cell)
    return where


# -- the report -------------------------------------------------------------------------------


@dataclass
class RunReport:
    """What a headless run did: outcome, where the copy is, time, clusters and their cost."""

    source: Path
    out: Path
    ok: bool = False
    wall_seconds: float = 0.0
    teardown_seconds: float = 0.0
    failed_cell: int | None = None  # 1-based, as the cell is numbered in the notebook given
    failure: str | None = None
    interrupted: str | None = None  # "SIGINT" or "SIGTERM"
    clusters: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    left_open: list[str] = field(default_factory=list)
    killed_processes: int = 0

    @property
    def exit_code(self) -> int:
        """0 ok; 130/143 interrupted; 1 a failed cell or a cluster that may still bill."""
        if self.interrupted:
            return _EXIT_SIGNAL.get(self.interrupted, 1)
        return 0 if self.ok and not self.left_open else 1

    def text(self) -> str:
        """What ``cumulo run`` prints."""
        if self.interrupted:
            head = f"cumulo run: {self.source.name} interrupted ({self.interrupted})"
        elif self.failure:
            head = f"cumulo run: {self.source.name} FAILED: {self.failure}"
        else:
            head = f"cumulo run: {self.source.name} ran"
        lines = [f"{head} in {self.wall_seconds:.1f}s"]
        cost = self.summary.get("cost")
        gpu_h = self.summary.get("gpu_hours") or 0.0
        money = (f"${cost:,.4f} ({self.summary.get('cost_kind')}: {self.summary.get('cost_basis')})"
                 if cost is not None else "no rate set (set cumulo.cost.rate-per-worker-hour to price local workers)")
        if self.clusters:
            from .share import _hardware

            names = ", ".join(f"{c['name']} ({c['provider']}, {_hardware(c)})" for c in self.clusters)
            lines.append(f"  clusters: {names}; torn down in {self.teardown_seconds:.1f}s")
            lines.append(f"  cost: {money}" + (f"; {gpu_h:.3f} GPU-hours" if gpu_h else ""))
        else:
            lines.append("  no cluster started")
        if self.killed_processes:
            lines.append(f"  killed {self.killed_processes} process(es) the kernel left behind")
        for name in self.left_open:
            lines.append(f"  WARNING: cluster {name} could not be stopped and may still bill: run `cumulo down {name}`")
        lines.append(f"  executed copy: {self.out}")
        return "\n".join(lines)


def _describe_cell(nb: Any, index: int, injected: int | None) -> tuple[int | None, str]:
    """(1-based number in the notebook as given, 'cell 5 (`x = 1/0`)') for an executed index."""
    cell = nb.cells[index]
    if injected is not None and index == injected:
        return None, "the injected parameters cell"
    number = index + 1 - (1 if injected is not None and index > injected else 0)
    first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")), "")
    first = first if len(first) <= 60 else first[:57] + "..."
    return number, f"cell {number} (`{first}`)"


# -- running ------------------------------------------------------------------------------------


def _kernel_name(nb: Any, wanted: str | None) -> str:
    """The kernel to run in: ``wanted``, else the notebook's, else python3 (MissingDependency without one)."""
    if wanted:
        return wanted
    name = (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        installed = KernelSpecManager().find_kernel_specs()
    except Exception:
        return "python3"
    if name in installed:
        return name
    if "python3" not in installed:
        raise MissingDependency(
            f"no Jupyter kernel to run {'kernel ' + repr(name) + ' or ' if name != 'python3' else ''}python3 in: "
            "pip install ipykernel (part of cumulo's install), or name an installed kernel with --kernel "
            "(see `jupyter kernelspec list`)")
    print(f"cumulo run: kernel {name!r} is not installed here; using python3", file=sys.stderr)
    return "python3"


def _require_notebook_packages() -> None:
    """Raise MissingDependency, naming the pip line, when a package ``cumulo run`` imports is missing.

    They are part of cumulo's core install; an environment that lost one (or was installed
    without dependencies) gets this instead of a ModuleNotFoundError from deep inside a run.
    """
    import importlib

    missing = []
    for module in _NOTEBOOK_PACKAGES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingDependency(
            f"{' and '.join(missing)} cannot be imported in this environment ({sys.executable}): "
            f"pip install {' '.join(missing)} ipykernel "
            "(cumulo's own install brings them: pip install --upgrade cumulo)")


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


async def _execute_in(kc: Any, code: str, timeout: float) -> bool:
    """Run ``code`` in the kernel on a client of our own; whether it finished within ``timeout``."""
    msg_id = kc.execute(code, store_history=False, allow_stdin=False, silent=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = await kc.get_shell_msg(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
        except Exception:  # queue.Empty: nothing yet
            continue
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return True
    return False


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc where there is one."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except OSError:
            return []
        return [pgid]
    alive = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields_ = stat[stat.rfind(")") + 2:].split()
        if len(fields_) > 2 and fields_[0] != "Z" and int(fields_[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def _kill_group(pgid: int | None) -> int:
    """Kill what is left of the kernel's process group; how many processes that was."""
    if not pgid or pgid == os.getpgid(0):
        return 0  # never our own group
    left = _group_alive(pgid)
    if not left:
        return 0
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except OSError:
            break
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_alive(pgid):
            break
    return len(left)


def _owned_rows(registry: Registry, pid: int | None, since: float) -> list[ClusterRecord]:
    if not pid:
        return []
    host = socket.gethostname()
    return [r for r in registry.list(include_closed=True, since=since - 5.0)
            if r.owner_pid == pid and r.owner_host == host and r.created >= since - 5.0]


async def _stop_left_open(registry: Registry, pid: int | None, since: float) -> list[str]:
    """Stop, through the lifecycle, rows the kernel owned that are still open; names of those that failed."""
    from .inventory import reconcile, stop_record, who

    failed = []
    for rec in _owned_rows(registry, pid, since):
        if not rec.is_open:
            continue
        try:
            await asyncio.wait_for(stop_record(rec, registry, why=who("stopped by `cumulo run` teardown")),
                                   TEARDOWN_TIMEOUT)
        except Exception:
            failed.append(rec.name)
    reconcile(registry)  # rows of clusters that lived in the kernel and died with it: lost
    return [r.name for r in _owned_rows(registry, pid, since) if r.is_open and r.name not in failed] + failed


async def _run(nb: Any, report: RunReport, *, kernel: str, cwd: Path, timeout: float | None,
               on: dict[str, Any] | None, named: dict[str, dict[str, Any]], injected: int | None,
               registry: Registry) -> None:
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
            env = {**os.environ, "CUMULO_REGISTRY": str(registry.path)}  # the kernel records where we look
            await client.async_start_new_kernel(cwd=str(cwd), env=env)
            provisioner = getattr(client.km, "provisioner", None)
            pid = getattr(provisioner, "pid", None)
            pgid = getattr(provisioner, "pgid", None)
            await client.async_start_new_kernel_client()
            client.reset_execution_trackers()
            if on is not None or named:
                setup = (f"import cumulo.run as _cumulo_run\n_cumulo_run.override_connect({on!r}, {named!r})\n"
                         "del _cumulo_run")
                if not await _execute_in(client.kc, setup, 60.0):
                    raise CumuloError("the kernel did not take the cluster spec within 60s")
            for index, cell in enumerate(nb.cells):
                try:
                    await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                    if report.interrupted:  # nbclient turns our cancellation into DeadKernelError
                        break
                    number, label = _describe_cell(nb, index, injected)
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
                await _teardown(client, pid, interrupt=busy)
                report.left_open = await _stop_left_open(registry, pid, started)
                report.killed_processes = await asyncio.to_thread(_kill_group, pgid)
            finally:
                report.teardown_seconds = time.perf_counter() - t1
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    rows = _owned_rows(registry, pid, started)
    report.clusters = [_entry(r) for r in sorted(rows, key=lambda r: r.created)]


def _entry(rec: ClusterRecord) -> dict[str, Any]:
    from .share import cluster_entry

    return cluster_entry(rec)


async def _teardown(client: Any, pid: int | None, *, interrupt: bool) -> None:
    """Steps 1 and 2 of the module docstring: the kernel closes its clusters, then it is shut down."""
    km = client.km
    if km is None:
        return
    try:
        alive = await km.is_alive()
    except Exception:
        alive = False
    if alive:
        if interrupt:
            if pid:  # stop the cell still running (only the kernel: SIGINT to its group would hit its workers)
                try:
                    os.kill(pid, signal.SIGINT)
                except OSError:
                    pass
                await asyncio.sleep(0.5)
        kc = km.client()
        try:
            kc.start_channels()
            await kc.wait_for_ready(timeout=30)
            if not await _execute_in(kc, _TEARDOWN, TEARDOWN_TIMEOUT):
                print("cumulo run: the kernel did not close its clusters in time; stopping them from here",
                      file=sys.stderr)
        except Exception as exc:
            print(f"cumulo run: could not ask the kernel to close its clusters ({type(exc).__name__}); "
                  "stopping them from here", file=sys.stderr)
        finally:
            kc.stop_channels()
    if client.kc is not None:
        try:
            client.kc.stop_channels()
        except Exception:
            pass
    try:
        km.shutdown_wait_time = 5.0  # it has closed its clusters already: a short grace, then SIGTERM
        await km.shutdown_kernel(now=not alive)
    except Exception:
        try:
            await km.shutdown_kernel(now=True)
        except Exception:
            pass
    finally:
        try:
            await km.cleanup_resources()
        except Exception:
            pass


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
    """Execute a notebook headless and tear down what it started (see the module docstring).

    ``on``: a spec for ``--on`` (text as :func:`parse_on` reads it, or its result); ``out``:
    where the executed copy goes, a folder or a .ipynb file (:func:`output_path`; default
    ``<name>.run.ipynb`` beside it); ``timeout``: seconds per cell (None: no limit); ``cwd``: the
    kernel's directory (default: the notebook's). Returns a :class:`RunReport`; raises
    SpecError before starting anything when the notebook, the spec or a parameter is wrong, and
    MissingDependency (naming the pip line) when a package it needs is not installed.
    """
    _require_notebook_packages()
    import nbformat

    from .registry import Registry
    from .share import METADATA_KEY, METADATA_VERSION, _read, estimate_line, last_run_line, run_summary

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
    named = {} if spec is not None else _embedded(previous)
    if spec is not None:
        print(f"cumulo run: running {src.name} on " + ", ".join(f"{k}={v}" for k, v in spec.items()))
    for name, fields in named.items():
        print(f"cumulo run: cluster {name!r} gets the spec the notebook carries: "
              + ", ".join(f"{k}={v}" for k, v in fields.items()))
    injected = _inject(nb, parameters or {})
    registry = registry or Registry()
    report = RunReport(source=src, out=dest)
    kernel_name = _kernel_name(nb, kernel)
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
