"""This kernel's name in the ledger and the cells it ran: shared by the per-cell hooks and the usage rows.

Kept apart from cellcost.py (the IPython hooks) and metering.py (the ledger's
figures) so that both read it without importing each other.
"""

from __future__ import annotations

import os
import socket
import sys
from collections import OrderedDict
from typing import Any

__all__ = ["first_line", "history", "kernel_id", "limit", "notebook", "remember"]

_history: OrderedDict[str, dict[str, Any]] = OrderedDict()
_kernel: list[str] = []
_limit = [10000]


def kernel_id() -> str:
    """This kernel's name in cell tags: its Jupyter kernel id (first 8 characters) or host, and pid.

    The pid makes a restarted kernel (same Jupyter id) a new kernel for the ledger,
    whose cell numbers start again.
    """
    if not _kernel:
        ident = None
        # a Jupyter kernel has ipykernel loaded before any cell runs; elsewhere (a script, `cumulo run`)
        # importing it only to learn that costs some 80 ms, at the first close
        if "ipykernel" in sys.modules:
            try:
                from ipykernel.connect import get_connection_file

                name = os.path.basename(get_connection_file())
                if name.startswith("kernel-") and name.endswith(".json"):
                    ident = name[len("kernel-"):-len(".json")][:8]
            except Exception:  # ipykernel imported, but this is not a kernel
                ident = None
        _kernel.append(f"{ident or socket.gethostname()}-{os.getpid()}".replace("/", "_"))
    return _kernel[0]


def notebook() -> str | None:
    """The file name of the notebook this kernel runs for, None outside a Jupyter session.

    jupyter_server gives a session's kernel the notebook's path in ``JPY_SESSION_NAME``
    (as ipykernel's ``__session__``); read each time, as a renamed notebook's kernel
    keeps its first path. Only the file name is kept: it names the cell, not where it lives.
    """
    path = os.environ.get("JPY_SESSION_NAME")
    if not path:
        return None
    return os.path.basename(path.rstrip("/")) or None


def first_line(source: str | None) -> str | None:
    """The first line of a cell's source that says something (not blank, not a lone comment marker)."""
    for line in (source or "").splitlines():
        text = line.strip()
        if text and text != "#":
            return text
    return None


def history() -> dict[str, dict[str, Any]]:
    """The cells this kernel ran, by tag: execution count, start and end (epoch seconds), wall (s)."""
    return dict(_history)


def limit(n: int) -> None:
    """Keep at most ``n`` cells (``cumulo.cost.max-cells``)."""
    _limit[0] = n


def remember(tag: str, execution_count: int | None, start: float, end: float, wall: float, *,
             notebook: str | None = None, first_line: str | None = None) -> None:
    """Record one cell as it ran here (the ledger knows its work; this, its clock and its name)."""
    _history[tag] = {"execution_count": execution_count, "start": start, "end": end, "wall": wall,
                     "notebook": notebook, "first_line": first_line}
    while len(_history) > _limit[0]:
        _history.popitem(last=False)
