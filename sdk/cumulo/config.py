"""cumulo's configuration: defaults under the ``cumulo.*`` key of dask.config.

Defaults come from ``cumulo.yaml`` beside this module and are merged into
dask.config in memory on import; nothing is ever written to the user's disk.
Users override them the way they override any dask setting (YAML in
~/.config/dask, ``DASK_CUMULO__...`` environment variables, ``dask.config.set``).
:func:`validate` checks the effective values against ``cumulo-schema.yaml``
(without jsonschema, which takes over a second to import) before they are used.

A provider brings its own section (``cumulo.<provider>.*``): its defaults and its
part of the schema, registered with :func:`add_section` when its class is
defined (providers/base.py). So that validation sees every installed provider's
section, the provider table registers a loader with :func:`add_section_source`;
:func:`schema`, :func:`defaults` and :func:`validate` run the loaders first.
Settings that moved are refused in their old spelling with an error naming the
new key (:data:`MOVED`).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask.config
import yaml
from dask.utils import parse_timedelta

from .exceptions import ConfigError

__all__ = ["MOVED", "add_section", "add_section_source", "defaults", "duration_seconds", "get", "path_of_registry",
           "read_yaml", "refuse_moved", "schema", "validate"]

_HERE = Path(__file__).parent
_DEFAULTS_FILE = _HERE / "cumulo.yaml"
_SCHEMA_FILE = _HERE / "cumulo-schema.yaml"


#: Settings every cloud shares, moved from ``cumulo.lambda.*`` to ``cumulo.cloud.*`` (old -> new spelling).
MOVED: dict[str, str] = {
    f"lambda.{key}": f"cloud.{key}" for key in (
        "worker-command", "worker-args", "gpu-probe", "install-packages", "python", "scheduler-port",
        "boot-timeout", "scheduler-timeout", "workers-timeout", "confirm-above-per-hour", "print-progress",
        "orphan-grace",
    )
}

#: Sections brought by providers: name -> (defaults, schema of the section).
_sections: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
#: Callables that register the sections of every installed provider (see add_section_source).
_section_sources: list[Callable[[], None]] = []


#: PyYAML's libyaml-backed safe loader where the wheel has it: the same documents, about 7x faster to read than
#: the pure-Python one (the schema alone took some 40 ms of every first connect()).
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file shipped with cumulo or a provider, read with a safe loader (plain data only).

    Providers' config files go through here too (providers/base.py): with libyaml, reading
    every built-in provider's section on the first connect() costs about 1 ms instead of 9.
    """
    with open(path) as f:
        return yaml.load(f, Loader=_SafeLoader)


def _load_defaults() -> dict[str, Any]:
    """The shipped defaults of cumulo's own sections, as {"cumulo": {...}}."""
    return read_yaml(_DEFAULTS_FILE)


@functools.cache
def _core_schema() -> dict[str, Any]:
    return read_yaml(_SCHEMA_FILE)


def add_section(name: str, *, defaults: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Add a provider's section ``cumulo.<name>.*``: its defaults (merged into dask.config's, below
    anything the user set) and its JSON schema (an object node with ``properties``), validated with
    the rest. Registering the same section again replaces it; a name cumulo itself uses is refused."""
    core = _core_schema()["properties"]
    if name in core:
        raise ConfigError(f"a provider cannot bring the section cumulo.{name}: cumulo uses it; name the "
                          "provider's section after the provider")
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), Mapping):
        raise ConfigError(f"the schema of cumulo.{name} must be an object with properties")
    _sections[name] = (dict(defaults), dict(schema))
    dask.config.update_defaults({"cumulo": {name: dict(defaults)}})


def add_section_source(load: Callable[[], None]) -> None:
    """Run ``load`` (which calls add_section for what it finds) before the schema is read or validated."""
    if load not in _section_sources:
        _section_sources.append(load)


def _load_sections() -> None:
    for load in list(_section_sources):
        load()


def schema() -> dict[str, Any]:
    """The JSON schema that every ``cumulo.*`` setting must satisfy: cumulo's and every provider's section."""
    _load_sections()
    merged = dict(_core_schema())
    merged["properties"] = {**merged["properties"], **{n: s for n, (_, s) in _sections.items()}}
    return merged


def defaults() -> dict[str, Any]:
    """The shipped defaults of every section (cumulo's and the providers'), without the ``cumulo`` level."""
    _load_sections()
    return {**_load_defaults()["cumulo"], **{n: d for n, (d, _) in _sections.items()}}


dask.config.update_defaults(_load_defaults())


_MISSING = object()


def get(key: str, default: Any = None) -> Any:
    """Read ``cumulo.<key>`` from dask.config (``key`` without the ``cumulo.`` prefix).

    A provider section's shipped default is found even where a ``dask.config.set`` context, entered
    before the provider was loaded, removed the section on exit (dask drops keys that it added).
    """
    value = dask.config.get(f"cumulo.{key}", default=_MISSING)
    if value is not _MISSING:
        return value
    section, _, rest = key.partition(".")
    node: Any = _sections[section][0] if section in _sections else _MISSING
    for part in rest.split(".") if rest else ():
        node = node.get(part, node.get(part.replace("-", "_"), _MISSING)) if isinstance(node, dict) else _MISSING
    return default if node is _MISSING else node


def validate() -> None:
    """Check every effective ``cumulo.*`` setting against cumulo-schema.yaml; raise ConfigError if one fails.

    Run where settings are about to be used (connect(), the Jupyter server's start), so
    that a typo is one clear error naming the key instead of a guard or reaper that
    dies later, or a setting silently read as "off". Checks types, enums, numeric
    bounds, that numbers are finite, that ``format: duration`` values parse with
    dask.utils.parse_timedelta (their bounds apply to the seconds), ``format: bytes``
    sizes, and that no unknown key is set. All problems are reported at once.
    """
    refuse_moved()
    problems: list[tuple[str, str]] = []
    _check(dask.config.get("cumulo", default={}), schema(), ["cumulo"], defaults(), problems)
    if not problems:
        return
    lines = [f"{key}: {why}" for key, why in problems]
    if len(lines) == 1:
        env = "DASK_" + "__".join(p.upper().replace("-", "_") for p in problems[0][0].split("[")[0].split("."))
        raise ConfigError(
            f"{lines[0]}. Fix it where it is set: a YAML file under ~/.config/dask, "
            f"the environment variable {env}, or dask.config.set()."
        )
    raise ConfigError(
        "invalid cumulo config:\n  " + "\n  ".join(lines) + "\nFix them where they are set: YAML files under "
        "~/.config/dask, DASK_CUMULO__SECTION__KEY environment variables, or dask.config.set()."
    )


def refuse_moved(section: str | None = None) -> None:
    """ConfigError naming the new key when a setting is set in a spelling that moved (:data:`MOVED`).

    ``section``: look only at ``cumulo.<section>.*`` (a provider about to read its settings).
    """
    for old, new in MOVED.items():
        if section is not None and not old.startswith(f"{section}."):
            continue
        sect, _, key = old.partition(".")
        given = dask.config.get(f"cumulo.{sect}", default=None)
        if isinstance(given, Mapping) and (key in given or key.replace("-", "_") in given):
            env = "DASK_CUMULO__" + new.upper().replace("-", "_").replace(".", "__")
            raise ConfigError(
                f"cumulo.{old} has moved to cumulo.{new} (a setting every cloud shares): set cumulo.{new} "
                f"instead (in ~/.config/dask YAML, {env}, or dask.config.set()) and remove cumulo.{old}.")


#: The JSON-schema keywords _check understands; a test keeps cumulo-schema.yaml within them.
_SCHEMA_KEYWORDS = frozenset({
    "$schema", "title", "description", "type", "properties", "additionalProperties", "items",
    "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "format",
})

_TYPE_WORDS = {
    "string": "a string", "number": "a number", "integer": "a whole number", "boolean": "true or false",
    "null": "null", "array": "a list", "object": "a mapping",
}


def _show(value: Any) -> str:
    """A value as the user would write it in YAML (strings quoted, so that '' and ' ' show)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (bool, type(None))) or (isinstance(value, float) and math.isfinite(value)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "object":
        return isinstance(value, dict)
    return False


def _hint(node: dict[str, Any], default: Any) -> str:
    """'; use e.g. <default>' plus what null means, for the end of a message."""
    kinds = node.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    example = default if default is not None else ("20m" if node.get("format") == "duration" else None)
    if example is None or isinstance(example, dict):
        return ""
    text = f"; use e.g. {_show(example)}"
    if "null" in kinds:
        text += ", or null to turn it off" if node.get("format") == "duration" else ", or null"
    return text


def _check(value: Any, node: dict[str, Any], path: list[str], default: Any, problems: list[tuple[str, str]]) -> None:
    """Append (key, why) for each way ``value`` fails ``node``; ``default`` is the shipped value there."""
    key = ".".join(path)
    if "enum" in node and value not in node["enum"]:
        problems.append((key, f"{_show(value)} is not one of {', '.join(_show(v) for v in node['enum'])}"))
        return
    kinds = node.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, k) for k in kinds):
            if node.get("format") == "duration" and "string" in kinds:
                expected = "a duration"
            else:
                expected = " or ".join(_TYPE_WORDS.get(k, k) for k in kinds)
            problems.append((key, f"{_show(value)} is not {expected}{_hint(node, default)}"))
            return
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        problems.append((key, f"{_show(value)} is not a finite number{_hint(node, default)}"))
        return
    if isinstance(value, dict):
        _check_mapping(value, node, path, default if isinstance(default, dict) else {}, problems)
        return
    if isinstance(value, (list, tuple)) and "items" in node:
        for i, item in enumerate(value):
            _check(item, node["items"], [*path[:-1], f"{path[-1]}[{i}]"], None, problems)
        return
    amount: Any = value
    fmt = node.get("format")
    if fmt == "duration":
        try:
            amount = duration_seconds(value)
        except ValueError as exc:
            problems.append((key, f"{_show(value)} {exc}{_hint(node, default)}"))
            return
    elif fmt == "bytes" and value != "auto":
        from dask.utils import parse_bytes

        try:
            amount = parse_bytes(value) if isinstance(value, str) else value
        except (ValueError, TypeError, OverflowError):
            problems.append((key, f"{_show(value)} is not a size; use e.g. 'auto', '4GiB' or a number of bytes"))
            return
    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
        unit = " seconds" if fmt == "duration" else ""
        for word, test, text in (
            ("minimum", lambda a, b: a >= b, "at least"),
            ("exclusiveMinimum", lambda a, b: a > b, "more than"),
            ("maximum", lambda a, b: a <= b, "at most"),
            ("exclusiveMaximum", lambda a, b: a < b, "less than"),
        ):
            if word in node and not test(amount, node[word]):
                problems.append((key, f"{_show(value)} must be {text} {node[word]:g}{unit}{_hint(node, default)}"))
                return


def _check_mapping(
    value: dict[str, Any], node: dict[str, Any], path: list[str], defaults: dict[str, Any],
    problems: list[tuple[str, str]],
) -> None:
    """Check each key of a mapping; dask accepts ``idle_timeout`` for ``idle-timeout``, so does this."""
    props: dict[str, Any] = node.get("properties", {})
    for raw, item in value.items():
        name = str(raw)
        known = name if name in props else name.replace("_", "-")
        extra = node.get("additionalProperties", True)
        if known in props:
            _check(item, props[known], [*path, known], defaults.get(known), problems)
        elif isinstance(extra, dict):  # a mapping of the user's own keys, each value checked against it
            _check(item, extra, [*path, name], None, problems)
        elif extra is False:
            close = difflib.get_close_matches(known, list(props), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                (".".join([*path, name]), f"unknown key; {hint}known keys here: {', '.join(sorted(props))}")
            )


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


def duration_seconds(value: object) -> float:
    """The seconds in a duration such as '20m', '1.5h' or 90, as dask.utils.parse_timedelta reads it.

    parse_timedelta answers bad input with KeyError, IndexError or OverflowError
    ('1e400s') and lets inf/nan through; this raises ValueError for all of them, with
    the reason as its message, so that callers can name the field in their own error.
    A negative duration ('-1s', -1) is returned as such: the caller says what minimum applies.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError("is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip() if isinstance(value, str) else value
        sign = 1.0
        if isinstance(text, str) and text.startswith("-"):  # parse_timedelta cannot read '-1s'
            sign, text = -1.0, text[1:].strip()
        if text == "":
            raise ValueError("is not a duration")
        try:
            parsed = parse_timedelta(text)
        except OverflowError:
            raise ValueError("is not a finite duration") from None
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise ValueError("is not a duration") from None
        if parsed is None:
            raise ValueError("is not a duration")
        seconds = sign * float(parsed)
    if not math.isfinite(seconds):
        raise ValueError("is not a finite duration")
    return seconds
