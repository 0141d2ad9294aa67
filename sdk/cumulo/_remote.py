"""Carry an exception raised on a worker back to the notebook as text.

The exception object may not unpickle on the client (a class defined in a cell,
a C++ error), so a worker sends its traceback as frame tuples instead. The
client fills in source lines the worker could not know: functions defined in a
notebook cell have their source in the *kernel's* linecache, not the worker's.
"""

from __future__ import annotations

import linecache
import traceback
from types import TracebackType
from typing import Any

__all__ = ["capture", "render"]


def capture(exc: BaseException, *, skip: int = 0) -> dict[str, Any]:
    """Describe ``exc`` as plain data: type name, message, frames (dropping ``skip`` outer frames)."""
    tb: TracebackType | None = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    frames = [(f.filename, f.lineno, f.name, f.line or "") for f in traceback.extract_tb(tb)]
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "frames": frames,
        "exception_only": "".join(traceback.format_exception_only(type(exc), exc)),
    }


def render(captured: dict[str, Any]) -> str:
    """Format a captured exception like Python's own traceback, filling source lines locally."""
    lines = ["Traceback (most recent call last):\n"]
    for filename, lineno, name, line in captured.get("frames", []):
        if not line and lineno:
            line = linecache.getline(filename, lineno).strip()
        lines.append(f'  File "{filename}", line {lineno}, in {name}\n')
        if line:
            lines.append(f"    {line}\n")
    lines.append(captured.get("exception_only") or f"{captured.get('type')}: {captured.get('message')}\n")
    return "".join(lines)
