"""scripts/suite_durations.py: per-file test time from a real pytest run's JUnit XML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_per_file_times_add_up_the_tests_of_each_file(tmp_path: Path) -> None:
    pkg = tmp_path / "tests"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "test_slow.py").write_text("import time\n\ndef test_a():\n    time.sleep(0.6)\n\n"
                                      "def test_b():\n    time.sleep(0.6)\n")
    (pkg / "test_fast.py").write_text("def test_c():\n    pass\n")
    junit = tmp_path / "junit.xml"
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          f"--junitxml={junit}", "tests"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "suite_durations.py"), str(junit)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("test time by file (2 files,")
    slow, fast = lines[1].split(), lines[2].split()
    assert slow[-1] == "tests/test_slow.py" and slow[2] == "2" and float(slow[0]) >= 1.2
    assert fast[-1] == "tests/test_fast.py" and fast[2] == "1" and float(fast[0]) < 1.0
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "suite_durations.py"), str(tmp_path / "no.xml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--junitxml=" in missing.stderr
