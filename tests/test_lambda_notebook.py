"""notebooks/lambda_cloud.ipynb runs top to bottom in a real kernel: against the emulator, or explaining and skipping."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from cumulo.life.registry import Registry

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "lambda_cloud.ipynb"


def _run(tmp_path: Path) -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
        for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )


def test_notebook_against_the_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUMULO_LAMBDA_EMULATOR", "1")
    monkeypatch.setenv("DASK_CUMULO__LAMBDA__CERTS_DIR", str(tmp_path / "certs"))
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    text = _run(tmp_path)
    assert "running against the Lambda API emulator" in text
    assert "gpu_1x_a10" in text and "offer: 2 x gpu_1x_a10" in text
    assert "scheduler: tls://127." in text and "estimated $/h: 1.5" in text
    assert "workers joined: 2/2" in text and "confirmed terminated" in text
    assert "state: closed" in text
    assert "orphans: []" in text and "instances still billing at the emulator: []" in text
    assert Registry().latest("lambda-demo").state == "closed"


def test_notebook_without_emulator_or_key_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUMULO_LAMBDA_EMULATOR", raising=False)
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    text = _run(tmp_path)
    assert "explain and skip" in text and "skipped" in text
    assert Registry().latest("lambda-demo") is None
