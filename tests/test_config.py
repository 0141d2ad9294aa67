"""Configuration: every default is described by the schema, validates, and nothing is written on import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask.config
import pytest

from cumulo import config
from cumulo.exceptions import ConfigError


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
    defaults = config.defaults()  # cumulo.yaml and every provider's own section
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
    defaults = config.defaults()  # cumulo.yaml and every provider's own section
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


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("guards.idle-timeout", "forever", "cumulo.guards.idle-timeout: 'forever' is not a duration; "
                                           "use e.g. '20m', or null to turn it off"),
        ("guards.interval", "-1s", "cumulo.guards.interval: '-1s' must be more than 0 seconds; use e.g. '10s'"),
        ("guards.interval", 0, "cumulo.guards.interval: 0 must be more than 0 seconds"),
        ("guards.lease-grace", "soon", "cumulo.guards.lease-grace: 'soon' is not a duration; use e.g. '2m'"),
        ("jupyter.reap-interval", "1e400s", "cumulo.jupyter.reap-interval: '1e400s' is not a finite duration"),
        ("connect.timeout", float("inf"), "cumulo.connect.timeout: inf is not a finite number"),
        ("cost.rate-per-gpu-hour", float("nan"), "cumulo.cost.rate-per-gpu-hour: nan is not a finite number"),
        ("guards.budget-warn-at", [0.5, float("nan")], "cumulo.guards.budget-warn-at[1]: nan is not a finite number"),
        ("guards.budget-action", "explode", "cumulo.guards.budget-action: 'explode' is not one of 'close'"),
        ("guards.keep-alive", "yes", "cumulo.guards.keep-alive: 'yes' is not true or false"),
        ("local.memory-limit", "lots", "cumulo.local.memory-limit: 'lots' is not a size"),
        ("local.n-workers", "four", "cumulo.local.n-workers: 'four' is not a whole number or null"),
        ("demo.rows", 0, "cumulo.demo.rows: 0 must be at least 1; use e.g. 2000000"),
        ("guards.idle-timout", "5m", "cumulo.guards.idle-timout: unknown key; did you mean 'idle-timeout'?"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(key: str, value: Any, words: str) -> None:
    with dask.config.set({f"cumulo.{key}": value}):
        with pytest.raises(ConfigError) as info:
            config.validate()
    assert words in str(info.value)
    assert "dask.config.set()" in str(info.value)  # says where settings come from


def test_values_that_mean_off_or_zero_validate() -> None:
    with dask.config.set({"cumulo.guards.idle-timeout": None, "cumulo.jupyter.reap-interval": 0,
                          "cumulo.progress.delay": "0s", "cumulo.guards.interval": 2.5,
                          "cumulo.local.memory-limit": "4GiB", "cumulo.local.n-workers": 2}):
        config.validate()


def test_every_problem_is_reported_at_once() -> None:
    with dask.config.set({"cumulo.guards.interval": "-1s", "cumulo.guards.lease-grace": "soon"}):
        with pytest.raises(ConfigError) as info:
            config.validate()
    assert "cumulo.guards.interval" in str(info.value) and "cumulo.guards.lease-grace" in str(info.value)


def test_environment_variables_are_validated_by_their_schema_key(tmp_path: Path) -> None:
    """dask keeps DASK_CUMULO__GUARDS__IDLE_TIMEOUT as 'idle_timeout': the same key as 'idle-timeout'."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    code = "from cumulo import config; config.validate(); print('ok')"
    good = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "DASK_CUMULO__GUARDS__IDLE_TIMEOUT": "5m"})
    assert good.returncode == 0 and good.stdout.strip() == "ok", good.stderr
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**env, "DASK_CUMULO__GUARDS__IDLE_TIMEOUT": "forever"})
    assert bad.returncode != 0
    assert "cumulo.guards.idle-timeout: 'forever' is not a duration" in bad.stderr
    assert "DASK_CUMULO__GUARDS__IDLE_TIMEOUT" in bad.stderr


def _properties(node: dict[str, Any], prefix: str = "cumulo") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key, child in node.get("properties", {}).items():
        out.append((f"{prefix}.{key}", child))
        out.extend(_properties(child, f"{prefix}.{key}"))
    return out


def test_the_schema_uses_only_keywords_validate_understands() -> None:
    def walk(node: dict[str, Any], where: str) -> list[str]:
        bad = [f"{where}: {k}" for k in node if k not in config._SCHEMA_KEYWORDS]
        for key, child in node.get("properties", {}).items():
            bad += walk(child, f"{where}.{key}")
        if isinstance(node.get("items"), dict):
            bad += walk(node["items"], f"{where}[]")
        return bad

    assert walk(config.schema(), "cumulo") == []


def test_every_string_or_number_setting_says_how_it_is_read() -> None:
    """A [string, number] value is a duration or a size: without a format, a typo would go unchecked."""
    missing = []
    for key, node in _properties(config.schema()):
        kinds = node.get("type", [])
        if isinstance(kinds, list) and "string" in kinds and "number" in kinds and "format" not in node:
            missing.append(key)
        if node.get("format") not in (None, "duration", "bytes"):
            missing.append(f"{key} (format {node['format']!r})")
    assert missing == [], f"add `format: duration` (with minimum or exclusiveMinimum) or `format: bytes` to {missing}"


def test_every_duration_default_validates_by_its_own_rule() -> None:
    from cumulo.spec import duration_seconds

    defaults = config.defaults()  # cumulo.yaml and every provider's own section
    for key, node in _properties(config.schema()):
        if node.get("format") == "duration":
            section, name = key.split(".")[1:]
            value = defaults[section][name]
            assert value is None or duration_seconds(value) >= 0, key


@pytest.mark.parametrize("key", sorted(config.MOVED))
def test_an_old_spelling_of_a_moved_key_is_refused_naming_the_new_one(key: str) -> None:
    """cumulo.lambda.boot-timeout and the other shared cloud settings moved to cumulo.cloud.*: the old
    spelling would be silently ignored, so it is an error that says where the setting lives now."""
    new = config.MOVED[key]
    value = config.defaults()["cloud"][new.split(".", 1)[1]]
    with dask.config.set({f"cumulo.{key}": value}):
        with pytest.raises(ConfigError) as info:
            config.validate()
    assert f"cumulo.{key} has moved to cumulo.{new}" in str(info.value)
    with dask.config.set({f"cumulo.{new}": value}):
        config.validate()


def test_an_old_spelling_is_refused_where_a_cloud_provider_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Also without validate(): `cumulo down` and the reaper read the settings without connect()."""
    from cumulo.providers.cloud import CloudSettings

    settings = CloudSettings("lambda")
    assert settings.key("boot-timeout") == "cumulo.cloud.boot-timeout"
    assert settings.key("terminate-timeout") == "cumulo.lambda.terminate-timeout"
    with dask.config.set({"cumulo.cloud.boot-timeout": "3m"}):
        assert settings.seconds("boot-timeout") == 180
    monkeypatch.setenv("DASK_CUMULO__LAMBDA__WORKER_COMMAND", "dask worker")
    dask.config.refresh()
    try:
        with pytest.raises(ConfigError, match="cumulo.lambda.worker-command has moved to cumulo.cloud.worker-command"):
            settings.get("worker-command")
    finally:
        monkeypatch.delenv("DASK_CUMULO__LAMBDA__WORKER_COMMAND")
        dask.config.refresh()


def test_a_provider_section_is_merged_and_validated_with_the_rest() -> None:
    """Lambda's section comes from its package (providers/lambda_cloud/config.yaml), not cumulo.yaml."""
    assert "lambda" in config.schema()["properties"] and "lambda" in config.defaults()
    assert config.get("lambda.terminate-timeout") == "5m"
    with dask.config.set({"cumulo.lambda.terminate-timout": "1m"}):
        with pytest.raises(ConfigError, match="cumulo.lambda.terminate-timout: unknown key; did you mean"):
            config.validate()
    with dask.config.set({"cumulo.lambda.poll-interval": "often"}):
        with pytest.raises(ConfigError, match="cumulo.lambda.poll-interval: 'often' is not a duration"):
            config.validate()


def test_a_provider_cannot_take_a_section_cumulo_uses() -> None:
    with pytest.raises(ConfigError, match="cumulo.guards: cumulo uses it"):
        config.add_section("guards", defaults={}, schema={"type": "object", "properties": {}})
