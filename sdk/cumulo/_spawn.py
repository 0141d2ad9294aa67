"""Catch a script that calls cumulo.connect() without ``if __name__ == "__main__":``.

Dask starts local worker processes with multiprocessing's 'spawn' method, which
runs the main script again in every child (as the module ``__mp_main__``). Code
at the top level of a script therefore runs once per worker: each child calls
connect() again, multiprocessing refuses to let it start processes of its own,
and the user gets one traceback per worker after a long wait, plus failed rows
in the registry. :func:`check_main_guard` recognises both sides of that before
anything starts and says what to add.

A script with no file to run again (read from standard input, ``python - <<EOF``, or deleted
since it started) cannot start spawned workers at all, guard or not: each child looks for the
file, fails, and distributed reports only "Nanny failed to start". That is refused up front too,
with the ways out.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import sys
from types import FrameType, ModuleType

import dask.config

from .exceptions import SpecError

__all__ = ["check_main_guard"]

_REIMPORTING = "__mp_main__"


def check_main_guard(*, starts_processes: bool = True) -> None:
    """Raise SpecError if connect() is being called where spawn re-runs it.

    Always raised in a spawned child that is re-running the main script's top
    level (connecting from there is never what was meant). In the main process it is
    raised only when ``starts_processes`` (the provider starts worker processes on
    this machine, as the local default does), dask starts them with 'spawn' or
    'forkserver', and the call comes from top-level code of the main script that is
    not under an ``if __name__ == "__main__":`` block, or from a script that has no file
    spawn could run again (``python -`` reading standard input). Notebooks, ``python -c``,
    the REPL and scripts with the guard pass.

    The main process is refused before anything starts, so that no worker, registry
    row or traceback per worker comes first; the child-side check is the fallback when
    the script's source cannot be read.
    """
    child = _top_level_frame(_REIMPORTING)
    if child is not None and _in_spawned_child():
        raise SpecError(_message(child))
    if not starts_processes or _start_method() not in ("spawn", "forkserver"):
        return
    main = sys.modules.get("__main__")
    if main is not None and _spawn_reruns(main) and not _rerunnable(main):
        raise SpecError(_no_file_message(main))
    frame = _top_level_frame("__main__")
    if main is None or frame is None or frame.f_globals is not vars(main):
        return
    if _spawn_reruns(main) and _unguarded(frame.f_code.co_filename, frame.f_lineno):
        raise SpecError(_message(frame))


def _rerunnable(main: ModuleType) -> bool:
    """Whether spawn's children can find the main script again: a module by name, or a file that exists.

    multiprocessing.spawn re-runs ``__main__.__file__`` (relative to the directory the parent
    started in); ``python -`` sets it to ``<stdin>``, which no child can open.
    """
    if getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    if not path:
        return True  # nothing to re-run: spawn skips it
    if not os.path.isabs(path) and multiprocessing.process.ORIGINAL_DIR is not None:
        path = os.path.join(multiprocessing.process.ORIGINAL_DIR, path)
    return os.path.isfile(path)


def _in_spawned_child() -> bool:
    """Whether this is a process started by multiprocessing (re-running the main script, or later).

    While a spawned child re-runs the main script, parent_process() is still None:
    multiprocessing marks that phase with ``_inheriting`` on the current process, which
    is what its own "not finished its bootstrapping phase" check reads.
    """
    current = multiprocessing.current_process()
    return bool(getattr(current, "_inheriting", False)) or multiprocessing.parent_process() is not None


def _spawn_reruns(main: ModuleType) -> bool:
    """Whether spawn runs this main module again in its children (the rules of multiprocessing.spawn).

    It does for a script (``python job.py``) and a module (``python -m pkg.job``); not for
    ``python -c``, the REPL, notebooks, a package's ``__main__`` or the ipython launcher.
    """
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return not (name == "__main__" or name.endswith(".__main__"))
    path = getattr(main, "__file__", None)
    return bool(path) and os.path.splitext(os.path.basename(path))[0] != "ipython"


def _start_method() -> str:
    """How dask starts local worker processes (distributed.worker.multiprocessing-method)."""
    return str(dask.config.get("distributed.worker.multiprocessing-method", "spawn"))


def _top_level_frame(module_name: str) -> FrameType | None:
    """The frame running the top level of the module called ``module_name``, if it is on the stack."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == module_name:
            return frame
        frame = frame.f_back
    return None


def _unguarded(filename: str, lineno: int | None) -> bool:
    """Whether line ``lineno`` of a script lies outside every ``if`` that tests ``__name__``.

    False when the source cannot be read or parsed: then nothing is known and nothing is refused.
    """
    if lineno is None or not os.path.isfile(filename):
        return False
    try:
        with open(filename, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _tests_name(node.test) and node.body:
            first, last = node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno
            if first <= lineno <= last:
                return False
    return True


def _tests_name(test: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(test))


def _no_file_message(main: ModuleType) -> str:
    path = str(getattr(main, "__file__", ""))
    what = ("this script was read from standard input (`python -`)" if path == "<stdin>"
            else f"this script's file {path!r} no longer exists")
    return (
        f"cumulo.connect() cannot start local worker processes: {what}. Dask starts local workers with "
        "multiprocessing's spawn method, which runs the main script's file again in every worker process, "
        "and there is no file to run (dask would only say 'Nanny failed to start'). Save the code to a file "
        'and run `python job.py` (with the cumulo.connect() call under `if __name__ == "__main__":`), pass it '
        'with `python -c "..."`, or run it in a notebook; connecting to a running cluster '
        "(cumulo.connect('tls://host:port')) works from standard input too."
    )


def _message(frame: FrameType) -> str:
    where = f"{os.path.basename(frame.f_code.co_filename)}, line {frame.f_lineno}"
    return (
        f"cumulo.connect() is called from the top level of the main script ({where}) without "
        '`if __name__ == "__main__":`. Dask starts local workers with multiprocessing\'s spawn method, '
        "which runs that top level again in every worker process, so each would try to start a cluster "
        "of its own. Wrap the code that calls cumulo.connect() in `if __name__ == \"__main__\":` "
        "(see the 'Safe importing of main module' rule of Python's multiprocessing docs)."
    )
