"""The shipped quickstart notebook runs top to bottom in a real kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from cumulo.life.registry import Registry

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_quickstart_notebook_executes(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: cell.outputs for i, cell in enumerate(nb.cells) if cell.cell_type == "code"}
    text = "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for outs in outputs.values() for o in outs
    )
    html = "\n".join(str(o.get("data", {}).get("text/html", "")) for outs in outputs.values() for o in outs)
    assert "cumulo cluster quickstart" in html  # the card
    assert "'pandas'" in text  # the backend on this CPU machine
    assert "kept" in text and "of 400,000 trips" in text
    assert "'closed'" in text
    assert Registry().latest("quickstart").state == "closed"
