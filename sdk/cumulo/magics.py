"""IPython integration: ``%load_ext cumulo``, and how a CumuloError looks in a notebook.

Loading the extension turns on the per-cell cost line (cumulo.cost.cellcost) for
every cluster connected in this kernel, now and later. Magics (``%cumulo``,
``%%cumulo``) are registered here too.

A CumuloError's message already says what happened and what to do next, so in IPython it
is shown as that message under the user's own frames (the cell, and any of the user's
functions it went through), without the frames of cumulo, distributed and asyncio beneath
them: :func:`show_errors_briefly`, registered with IPython's ``set_custom_exc`` when cumulo
is imported in a running shell. ``%tb`` shows the whole traceback of the last error, and
``cumulo.debug: true`` (``dask.config.set({"cumulo.debug": True})``) shows it every time.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

from . import attached, config
from .cost import cellcost
from .exceptions import CumuloError

__all__ = ["load_ipython_extension", "register_with_running_shell", "show_errors_briefly", "unload_ipython_extension"]

#: Appended to a brief error: where the rest of the traceback is.
FULL_TRACEBACK_HINT = "(%tb shows the full traceback; cumulo.debug: true shows it for every cumulo error)"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def show_errors_briefly(shell: Any) -> bool:
    """Show CumuloErrors in ``shell`` as their message and the user's frames (IPython's set_custom_exc).

    Returns whether cumulo's display is in place; another library's handler is left alone
    (IPython keeps one), and then errors show as IPython shows them by default.
    """
    current = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if current == (CumuloError,):
        return True
    if current or not hasattr(shell, "set_custom_exc"):
        return False
    shell.set_custom_exc((CumuloError,), _show_cumulo_error)
    return True


def _show_cumulo_error(
    shell: Any, etype: type[BaseException], value: BaseException, tb: TracebackType | None, tb_offset: int | None = None
) -> list[str]:
    """IPython's custom exception handler: display the error, return what was shown. Never raises."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # %tb and %debug find it
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    try:
        if config.get("debug", False):
            stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
        else:
            stb = _brief(shell, etype, value, tb)
    except Exception:  # formatting must not hide the error itself: plain text, as Python prints it
        import traceback

        stb = [*traceback.format_exception_only(etype, value), FULL_TRACEBACK_HINT]
    shell._showtraceback(etype, value, stb)
    if getattr(shell, "call_pdb", False):  # %pdb on: the debugger, as for any other error
        shell.debugger(force=True)
    return stb


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """A traceback of the frames before the first frame of cumulo itself, IPython's own frames left out."""
    import IPython

    ipython_dir = os.path.dirname(os.path.abspath(IPython.__file__)) + os.sep
    kept: list[TracebackType] = []
    while tb is not None:
        filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if filename.startswith(_PACKAGE_DIR):
            break
        if not filename.startswith(ipython_dir):
            kept.append(tb)
        tb = tb.tb_next
    chain: TracebackType | None = None
    for frame_tb in reversed(kept):
        chain = TracebackType(chain, frame_tb.tb_frame, frame_tb.tb_lasti, frame_tb.tb_lineno)
    return chain


def _brief(shell: Any, etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> list[str]:
    """The user's frames and the message, as IPython draws them, without chained exceptions; then the hint."""
    user = _user_frames(tb)
    if user is None:
        stb = list(shell.InteractiveTB.get_exception_only(etype, value))
    else:
        # the exception this one was raised from is cumulo's business (it stays on value.__cause__)
        cause, context, suppress = value.__cause__, value.__context__, value.__suppress_context__
        value.__cause__ = value.__context__ = None
        try:
            stb = list(shell.InteractiveTB.structured_traceback(etype, value, user, tb_offset=0))
        finally:
            value.__cause__, value.__context__, value.__suppress_context__ = cause, context, suppress
            shell.InteractiveTB.tb = tb  # what %debug walks: every frame, as after any other error
    return [*stb, FULL_TRACEBACK_HINT]


def register_with_running_shell() -> bool:
    """Called on ``import cumulo``: in an IPython shell (a Jupyter kernel), show CumuloErrors briefly.

    Imports nothing when IPython is not already loaded, so a plain script stays as it was.
    """
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:
        return False
    return shell is not None and show_errors_briefly(shell)


def load_ipython_extension(ip: Any) -> None:
    """Called by ``%load_ext cumulo``: register the per-cell hooks and follow open clusters."""
    cellcost.register(ip)
    show_errors_briefly(ip)
    from ._cell_magic import CellMagics  # %%cumulo: run a cell on a worker (remote_cell.py)

    ip.register_magics(CellMagics)
    for cluster in list(attached.live):
        cellcost.track(cluster)


def unload_ipython_extension(ip: Any) -> None:
    """Called by ``%unload_ext cumulo``: remove the per-cell hooks."""
    cellcost.unregister(ip)
