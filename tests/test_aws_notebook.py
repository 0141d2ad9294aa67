"""notebooks/aws_spot.ipynb and examples/aws_spot.py run top to bottom: against the EC2 emulator, or explaining
and skipping. The emulator runs inside the notebook's kernel (as a user's would), so these tests do not use
the aws fixture; the kernel's own last cell checks that nothing bills."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cumulo.life.registry import Registry

from .cloud_support import notebook_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "aws_spot.ipynb"

pytestmark = pytest.mark.timeout(300)


def _run(tmp_path: Path) -> str:
    return notebook_text(NOTEBOOK, tmp_path)


def test_aws_notebook_against_the_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUMULO_AWS_EMULATOR", "1")
    monkeypatch.setenv("DASK_CUMULO__AWS__CERTS_DIR", str(tmp_path / "certs"))
    text = _run(tmp_path)
    assert "running against the EC2 emulator at http://127.0.0.1:" in text
    assert "g5.xlarge" in text and "1.006" in text  # the catalog's table
    assert "billing $/h: 1.826" in text  # the head on-demand (1.006) + 2 spot workers in us-east-1c (0.41)
    assert text.count(": spot in us-east-1c at $0.41/h") == 2 and ": on-demand in us-east-1a at $1.006/h" in text
    assert "state: closed" in text
    assert "orphans: []" in text and "instances still billing at the emulator: []" in text
    assert Registry().latest("aws-spot").state == "closed"


def test_aws_notebook_without_emulator_or_launch_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUMULO_AWS_EMULATOR", raising=False)
    monkeypatch.delenv("CUMULO_AWS_LAUNCH", raising=False)
    text = _run(tmp_path)
    assert "explain and skip" in text and "skipped" in text
    assert Registry().latest("aws-spot") is None


def test_aws_script_against_the_emulator(tmp_path: Path) -> None:
    env = {**os.environ, "CUMULO_AWS_EMULATOR": "1", "DASK_CUMULO__AWS__CERTS_DIR": str(tmp_path / "certs")}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "aws_spot.py")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "billing $/h: 1.826" in out.stdout and "sum: 4950" in out.stdout
    assert "state: closed" in out.stdout and "orphans: []" in out.stdout
    assert "falling back" not in out.stderr and "us-east-1b spot: InsufficientInstanceCapacity" in out.stderr
