"""The JupyterLab front end's own unit tests (node's test runner over the compiled TypeScript), run from pytest
so that CI's one test command covers them, plus checks of the settings schema and the built extension."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "extension"


def _env() -> dict[str, str]:
    # jlpm and jupyter-builder live next to this interpreter
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


@pytest.mark.slow
def test_jlpm_test_passes() -> None:
    env = _env()
    jlpm = shutil.which("jlpm", path=env["PATH"])
    assert jlpm, "jlpm not found: it ships with jupyterlab (pip install jupyterlab)"
    if not (EXT / "node_modules").exists():
        subprocess.run([jlpm, "install", "--immutable"], cwd=EXT, env=env, check=True, timeout=600)
    out = subprocess.run([jlpm, "test"], cwd=EXT, env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "# fail 0" in text and "# pass 0" not in text, text[-2000:]


def test_settings_schema_is_closed_and_documented() -> None:
    schema = json.loads((EXT / "schema" / "plugin.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"refreshInterval", "confirmAbovePerHour"}
    for name, prop in schema["properties"].items():
        assert prop.get("description") and "default" in prop, name


def test_package_json_builds_into_the_python_package() -> None:
    package = json.loads((EXT / "package.json").read_text())
    assert package["jupyterlab"]["outputDir"] == "../sdk/cumulo/labextension"
    assert package["jupyterlab"]["schemaDir"] == "schema"
    assert "@jupyterlab/core-meta" in package["devDependencies"]
    lock = (EXT / "yarn.lock").read_text()
    assert "http://" not in lock and "https://" not in lock  # no registry host recorded in the lockfile
