"""notebooks/lambda_cloud.ipynb runs top to bottom in a real kernel: against the emulator, or explaining and skipping."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.life.registry import Registry

from .cloud_support import notebook_text

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "lambda_cloud.ipynb"


def _run(tmp_path: Path) -> str:
    return notebook_text(NOTEBOOK, tmp_path)


def test_notebook_against_the_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUMULO_LAMBDA_EMULATOR", "1")
    monkeypatch.setenv("DASK_CUMULO__LAMBDA__CERTS_DIR", str(tmp_path / "certs"))
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    text = _run(tmp_path)
    assert "running against the Lambda API emulator" in text
    assert "gpu_1x_a10" in text and "offer: 2 x gpu_1x_a10" in text
    assert "scheduler: tls://127." in text and "estimated $/h: 1.5" in text
    assert "workers joined: 2/2" in text and "confirmed terminated" in text
    assert "after scale(3): 3 instances' workers, $/h: 2.25" in text
    assert "state: closed" in text
    assert "orphans: []" in text and "instances still billing at the emulator: []" in text
    assert Registry().latest("lambda-demo").state == "closed"


def test_notebook_without_emulator_or_key_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUMULO_LAMBDA_EMULATOR", raising=False)
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    text = _run(tmp_path)
    assert "explain and skip" in text and "skipped" in text
    assert Registry().latest("lambda-demo") is None
