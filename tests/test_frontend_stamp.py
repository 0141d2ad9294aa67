"""A rerun of scripts/test after an edit of extension/src rebuilds the front end (issue 28, item 2).

The decision is scripts/frontend_stamp.py's digest, run here on a copy of the real extension sources; and
scripts/test's own front-end block, cut from the script as it is and run in a scratch tree, where ``jlpm`` is
a recorder on PATH (the build itself is test_extension_frontend.py's and CI's: no second webpack run here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAMP_SCRIPT = ROOT / "scripts" / "frontend_stamp.py"
SOURCES = ("package.json", "yarn.lock", "tsconfig.json", "src", "style", "schema")


@pytest.fixture
def extension(tmp_path: Path) -> Path:
    """A copy of the extension's sources (no node_modules, no build output)."""
    ext = tmp_path / "extension"
    ext.mkdir()
    for name in SOURCES:
        src = ROOT / "extension" / name
        if src.is_dir():
            shutil.copytree(src, ext / name)
        else:
            shutil.copy2(src, ext / name)
    return ext


def _check(extension: Path, stamp: Path) -> str:
    """What frontend_stamp.py answers for this tree: 'fresh' or 'rebuild'."""
    done = subprocess.run([sys.executable, str(STAMP_SCRIPT), "check", str(extension), str(stamp)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return "fresh" if done.returncode == 0 else "rebuild"


def _write(extension: Path, stamp: Path) -> None:
    subprocess.run([sys.executable, str(STAMP_SCRIPT), "write", str(extension), str(stamp)], check=True,
                   timeout=60)


def test_an_edit_of_the_sources_after_the_last_build_asks_for_a_rebuild(extension: Path, tmp_path: Path) -> None:
    stamp = tmp_path / "frontend-stamp"
    assert _check(extension, stamp) == "rebuild"  # never built
    _write(extension, stamp)
    assert _check(extension, stamp) == "fresh"
    panel = extension / "src" / "panel.ts"
    panel.write_text(panel.read_text() + "\n// an edit after the last build\n")
    assert _check(extension, stamp) == "rebuild"
    _write(extension, stamp)
    for part in ("style", "schema"):  # what the bundle carries besides the TypeScript
        first = sorted(p for p in (extension / part).rglob("*") if p.is_file())[0]
        first.write_text(first.read_text() + "\n")
        assert _check(extension, stamp) == "rebuild", part
        _write(extension, stamp)
    new = extension / "src" / "extra.ts"  # a new module counts as well
    new.write_text("export const x = 1;\n")
    assert _check(extension, stamp) == "rebuild"


def test_a_touch_or_a_test_file_edit_is_not_a_rebuild(extension: Path, tmp_path: Path) -> None:
    stamp = tmp_path / "frontend-stamp"
    _write(extension, stamp)
    panel = extension / "src" / "panel.ts"
    os.utime(panel)  # a checkout or a save without change: same bytes, newer mtime
    tests = sorted((extension / "src" / "__tests__").glob("*.ts"))
    assert tests, "the extension's unit tests live in src/__tests__"
    tests[0].write_text(tests[0].read_text() + "\n// a test edit: never bundled\n")
    assert _check(extension, stamp) == "fresh"


def _front_end_block() -> str:
    """scripts/test's front-end part, as the script has it (from its comment to the closing fi)."""
    lines = (ROOT / "scripts" / "test").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("# The front end is rebuilt")), None)
    assert start is not None, "scripts/test has no front-end rebuild step"
    end = next(i for i in range(start, len(lines)) if lines[i] == "fi")
    return "\n".join(lines[start:end + 1]) + "\n"


def test_scripts_test_rebuilds_after_an_edit_and_only_then(extension: Path, tmp_path: Path) -> None:
    tree = tmp_path
    (tree / "scripts").mkdir()
    shutil.copy2(STAMP_SCRIPT, tree / "scripts" / STAMP_SCRIPT.name)
    (tree / ".venv").mkdir()
    (tree / "extension" / "node_modules").mkdir()
    built = tree / "sdk" / "cumulo" / "labextension" / "static" / "style.js"
    built.parent.mkdir(parents=True)
    log = tree / "jlpm.log"
    bin_dir = tree / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    jlpm = bin_dir / "jlpm"
    jlpm.write_text(f'#!/bin/sh\necho "jlpm $*" >> {log}\n[ "$1" = build ] && mkdir -p {built.parent} '
                    f'&& echo built > {built}\nexit 0\n')
    jlpm.chmod(0o755)
    script = tree / "front-end.sh"
    script.write_text("set -euo pipefail\n" + _front_end_block())

    def rerun(**env: str) -> list[str]:
        log.write_text("")
        subprocess.run(["bash", str(script)], cwd=tree, check=True, timeout=120,
                       env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env})
        return log.read_text().split("\n")[:-1]

    assert rerun() == ["jlpm build"]  # nothing built yet
    assert rerun() == []  # built from these sources: nothing to do
    panel = extension / "src" / "panel.ts"
    panel.write_text(panel.read_text() + "\n// an edit after the last build\n")
    assert rerun() == ["jlpm build"], "an edit of extension/src must rebuild the JavaScript the tests drive"
    assert rerun() == []
    built.unlink()  # the output removed (jlpm clean): rebuilt even with a fresh stamp
    assert rerun() == ["jlpm build"]
    panel.write_text(panel.read_text() + "\n// edited again, then a full install (its build hook builds)\n")
    assert rerun(installed="1") == []  # the install just built these sources: no second build
    assert rerun() == []
