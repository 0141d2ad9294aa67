"""Configuration: every default is described by the schema, validates, and nothing is written on import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask.config
import pytest
import yaml

from cumulo import config
from cumulo.exceptions import ConfigError

DEFAULTS = Path(config.__file__).with_name("cumulo.yaml")


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.extend(_leaves(value, path))
        else:
            out.append(path)
    return out


def test_every_default_key_is_described_in_the_schema() -> None:
    defaults = yaml.safe_load(DEFAULTS.read_text())["cumulo"]
    schema = config.schema()
    missing = []
    for leaf in _leaves(defaults):
        node = schema
        for part in leaf.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                break
        if node is None or not node.get("description"):
            missing.append(leaf)
    assert not missing, f"config keys without a schema description: {missing}"


def test_every_schema_section_has_defaults() -> None:
    defaults = yaml.safe_load(DEFAULTS.read_text())["cumulo"]
    assert set(config.schema()["properties"]) == set(defaults)


def test_defaults_validate_and_bad_values_are_named() -> None:
    config.validate()
    with dask.config.set({"cumulo.connect.version-check": "sometimes"}):
        with pytest.raises(ConfigError, match="cumulo.connect.version-check"):
            config.validate()


def test_env_var_overrides_registry_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUMULO_REGISTRY", str(tmp_path / "x.db"))
    assert config.path_of_registry() == tmp_path / "x.db"
    monkeypatch.delenv("CUMULO_REGISTRY")
    with dask.config.set({"cumulo.registry.path": str(tmp_path / "y.db")}):
        assert config.path_of_registry() == tmp_path / "y.db"


def test_import_writes_nothing_to_the_users_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUMULO_", "DASK_", "XDG_"))}
    env["HOME"] = str(home)
    subprocess.run([sys.executable, "-c", "import cumulo, cumulo.cli; cumulo.config.get('connect.timeout')"],
                   check=True, env=env, timeout=120)
    assert list(home.rglob("*")) == []
