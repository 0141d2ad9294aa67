"""cumulo's configuration: defaults under the ``cumulo.*`` key of dask.config.

Defaults come from ``cumulo.yaml`` beside this module and are merged into
dask.config in memory on import; nothing is ever written to the user's disk.
Users override them the way they override any dask setting (YAML in
~/.config/dask, ``DASK_CUMULO__...`` environment variables, ``dask.config.set``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.config
import yaml

from .exceptions import ConfigError

__all__ = ["get", "path_of_registry", "schema", "validate"]

_HERE = Path(__file__).parent
_DEFAULTS_FILE = _HERE / "cumulo.yaml"
_SCHEMA_FILE = _HERE / "cumulo-schema.yaml"


def _load_defaults() -> dict[str, Any]:
    with open(_DEFAULTS_FILE) as f:
        return yaml.safe_load(f)


def schema() -> dict[str, Any]:
    """The JSON schema that every ``cumulo.*`` setting must satisfy."""
    with open(_SCHEMA_FILE) as f:
        return yaml.safe_load(f)


dask.config.update_defaults(_load_defaults())


def get(key: str, default: Any = None) -> Any:
    """Read ``cumulo.<key>`` from dask.config (``key`` without the ``cumulo.`` prefix)."""
    return dask.config.get(f"cumulo.{key}", default=default)


def validate() -> None:
    """Check the effective ``cumulo.*`` settings against the schema; raise ConfigError if they fail."""
    import jsonschema  # imported here: it takes seconds to import, and import cumulo must stay fast

    try:
        jsonschema.validate(dask.config.get("cumulo"), schema())
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ConfigError(
            f"cumulo config key 'cumulo.{where}' is invalid: {exc.message}. "
            "Fix it in your dask config YAML or DASK_CUMULO__* environment variables."
        ) from None


def path_of_registry() -> Path:
    """Where the registry lives: $CUMULO_REGISTRY, else ``cumulo.registry.path``, else the user data dir."""
    env = os.environ.get("CUMULO_REGISTRY")
    if env:
        return Path(env).expanduser()
    configured = get("registry.path")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("cumulo", appauthor=False)) / "registry.db"
