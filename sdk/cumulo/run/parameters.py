"""Parameters, papermill-style: ``-p rows=100000`` becomes ``rows = 100000`` in an injected cell.

The cell goes after the cell tagged ``parameters`` (at the top when there is none) and is
tagged ``injected-parameters``, replacing one an earlier run injected; values are Python
literals, anything else is a string (``true``/``none`` as JSON spells them are understood).
"""

from __future__ import annotations

import ast
import sys
from typing import Any

from ..exceptions import SpecError


def literal(text: str) -> Any:
    """A parameter's value: a Python literal when it parses as one, else the text itself."""
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
        out[key] = literal(value)
    return out


def inject(nb: Any, parameters: dict[str, Any]) -> int | None:
    """Put the parameters cell in place; return its index (None when there are no parameters)."""
    import nbformat  # checked by runner's require_notebook_packages: missing, it is a MissingDependency

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
