"""The registry is private to its user and never holds the values of env=, nor credentials in options."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import cumulo
from cumulo.exceptions import SpecError
from cumulo.life.registry import Registry
from cumulo.spec import ENV_NOT_STORED, ClusterSpec

from .conftest import ROOT


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _all_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_a_new_registry_is_private(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "deeper" / "registry.db"
    reg = Registry(path)
    reg.create("x", "local", {})
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if extra.exists():
            assert _mode(extra) & 0o077 == 0, extra


def test_an_existing_world_readable_registry_is_fixed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    Registry(path).create("x", "local", {})
    path.chmod(0o644)
    Registry(path)
    assert _mode(path) == 0o600


def test_the_default_folder_is_tightened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cumulo's own data folder (no CUMULO_REGISTRY, no config) is made 0700 even when it existed 0755."""
    monkeypatch.delenv("CUMULO_REGISTRY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    folder = tmp_path / "data" / "cumulo"
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)
    out = subprocess.run([sys.executable, "-c", "from cumulo.life.registry import Registry; print(Registry().path)"],
                         capture_output=True, text=True, cwd=str(ROOT), env=dict(os.environ), check=True)
    assert Path(out.stdout.strip()).parent == folder
    assert _mode(folder) == 0o700 and _mode(folder / "registry.db") == 0o600


def test_env_values_never_reach_the_registry(registry_path: Path) -> None:
    password = "hunter2-" + "x7Qm" * 4
    url = f"postgresql://etl:{password}@db.internal:5432/sales"
    with cumulo.connect(workers=1, threads_per_worker=1,
                        env={"DATABASE_URL": url, "OMP_NUM_THREADS": "1"}) as cluster:
        # the workers do get the value
        assert cluster.client.submit(lambda: os.environ.get("DATABASE_URL")).result() == url
        row = cluster.registry.get(cluster.id)
        assert row.spec["env"] == {"DATABASE_URL": ENV_NOT_STORED, "OMP_NUM_THREADS": ENV_NOT_STORED}
        assert password.encode() not in _all_bytes(registry_path)
    assert password.encode() not in _all_bytes(registry_path)


@pytest.mark.parametrize("value", [
    "hf_" + "a1B2c3D4e5" * 3,
    "https://user:" + "pa55" * 3 + "@example.invalid/x",
    "sk-ant-api03-" + "Zz9" * 10,
])
def test_credentials_as_option_values_are_refused(value: str) -> None:
    with pytest.raises(SpecError, match="looks like a credential"):
        ClusterSpec(provider="local", options={"remote": value})
    ClusterSpec(provider="local", options={"remote": "https://example.invalid/plain"})  # no password: fine
