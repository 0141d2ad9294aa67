"""notebooks/azure_spot.ipynb and examples/azure_spot.py run top to bottom: against the ARM emulator, or
explaining and skipping. The emulators run inside the notebook's kernel (as a user's would), so these tests do
not use the arm fixture; the kernel's own last cell shows that nothing is left.

(The pair is azure_spot, not azure: a script named azure.py, run as ``python examples/azure.py``, would be
imported as the ``azure`` package and hide the Azure SDKs.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cumulo.life.registry import Registry

from .cloud_support import notebook_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "azure_spot.ipynb"

pytestmark = pytest.mark.timeout(300)

#: The head regular (3.673), one worker refused Spot and so regular (3.673), one Spot worker (0.9).
RATE = "billing $/h: 8.246"


def test_azure_notebook_against_the_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUMULO_AZURE_EMULATOR", "1")
    monkeypatch.setenv("DASK_CUMULO__AZURE__CERTS_DIR", str(tmp_path / "certs"))
    text = notebook_text(NOTEBOOK, tmp_path)
    assert "running against the ARM emulator at https://127.0.0.1:" in text
    assert "Standard_NC24ads_A100_v4" in text and "3.673" in text  # the catalog's table
    assert RATE in text
    assert text.count(": regular at $3.673/h") == 2 and text.count(": spot at $0.9/h") == 1
    assert "state: closed" in text
    assert "orphans: []" in text and "VMs still at the emulator: [] groups: []" in text
    assert Registry().latest("azure-spot").state == "closed"


def test_azure_notebook_without_emulator_or_launch_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUMULO_AZURE_EMULATOR", raising=False)
    monkeypatch.delenv("CUMULO_AZURE_LAUNCH", raising=False)
    text = notebook_text(NOTEBOOK, tmp_path)
    assert "explain and skip" in text and "skipped" in text
    assert Registry().latest("azure-spot") is None


def test_azure_script_against_the_emulator(tmp_path: Path) -> None:
    env = {**os.environ, "CUMULO_AZURE_EMULATOR": "1", "DASK_CUMULO__AZURE__CERTS_DIR": str(tmp_path / "certs")}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "azure_spot.py")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert RATE in out.stdout and "sum: 4950" in out.stdout
    assert "state: closed" in out.stdout and "orphans: []" in out.stdout
    assert "falling back" in out.stderr and "regular" in out.stderr
