"""Where every real part is required (CI), a skip fails the run with its reason; only `gpu` tests may skip.

Runs pytest in a subprocess on a small test file with tests/require_all.py loaded, as .ci/run's pytest has it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = '''
import pytest

def test_needs_sshd():
    pytest.skip("no /usr/sbin/sshd: apt-get install -y openssh-server")

@pytest.mark.gpu
@pytest.mark.skip(reason="needs an NVIDIA GPU")
def test_on_a_gpu():
    pass

def test_fine():
    assert 1 + 1 == 2
'''

MISSING_EXTRA = '''
import pytest
pytest.importorskip("no_such_test_extra_xyz")

def test_never_collected():
    pass
'''


def _pytest(tmp_path: Path, source: str, *, require: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CUMULO_TEST_REQUIRE_ALL", "PYTEST_ADDOPTS")}
    if require:
        env["CUMULO_TEST_REQUIRE_ALL"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.require_all", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-o", "markers=gpu: needs a GPU", "--rootdir", str(tmp_path), "-rs", "-q", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_where_every_part_is_required(tmp_path: Path) -> None:
    out = _pytest(tmp_path, SAMPLE, require=True)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "1 failed, 1 passed, 1 skipped" in text  # the gpu test alone still skips
    assert "skipped where every real part is required" in text and "apt-get install -y openssh-server" in text


def test_a_missing_test_extra_stops_the_run_where_every_part_is_required(tmp_path: Path) -> None:
    out = _pytest(tmp_path, MISSING_EXTRA, require=True)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text  # an error at collection: the run stops, saying why
    assert "skipped where every real part is required" in text and "no_such_test_extra_xyz" in text


def test_skips_stay_skips_elsewhere(tmp_path: Path) -> None:
    out = _pytest(tmp_path, SAMPLE, require=False)
    assert out.returncode == 0 and "1 passed, 2 skipped" in out.stdout, out.stdout + out.stderr
    out = _pytest(tmp_path, MISSING_EXTRA, require=False)
    assert out.returncode == 5 and "1 skipped" in out.stdout, out.stdout + out.stderr  # 5: no test ran
