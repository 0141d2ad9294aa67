"""What the notebook's clusters run on: ``--on SPEC``, or the specs the notebook carries.

``--on SPEC`` (``local``, ``lambda,gpu=A10,workers=4``, a JSON file or another notebook whose
spec to use) is read and validated here (:func:`parse_on`) before anything starts. Without
it, the specs recorded under ``metadata.cumulo.clusters`` (by an earlier run or a share)
apply by cluster name (:func:`embedded_specs`). Either way :mod:`.override` makes the
kernel's ``cumulo.connect`` use them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..exceptions import SpecError
from ..providers import known_providers
from ..share import SPEC_FIELDS, from_notebook
from ..spec import DASK_ALIASES, ClusterSpec, did_you_mean
from .parameters import literal


def parse_on(text: str) -> dict[str, Any]:
    """A spec for ``--on``: 'local', 'lambda,gpu=A10,workers=4', a .json file, or a notebook to take it from.

    Returns plain data with a ``provider`` key, validated as a ClusterSpec (SpecError otherwise).
    ``confirm=true`` is accepted too (it confirms a paid offer above the threshold).
    """
    path = Path(text).expanduser()
    if text.endswith(".ipynb"):
        return from_notebook(path).to_dict()
    if text.endswith(".json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SpecError(f"--on {text}: cannot read a JSON spec from it: {exc}") from exc
    else:
        provider, *pairs = [p.strip() for p in text.split(",") if p.strip()] or [""]
        data = {"provider": provider}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise SpecError(f"--on {text!r}: {pair!r} is not key=value (e.g. --on 'lambda,gpu=A10,workers=2')")
            data[key.strip()] = literal(value)
    if not isinstance(data, dict):
        raise SpecError(f"--on {text}: a spec is an object of fields, e.g. {{\"provider\": \"local\", \"workers\": 2}}")
    data.setdefault("provider", "local")
    confirm = data.pop("confirm", None)
    data = {DASK_ALIASES.get(k, k): v for k, v in data.items()}  # n_workers=2 is workers=2, as in connect()
    unknown = sorted(set(data) - set(SPEC_FIELDS))
    if unknown:
        raise SpecError(f"--on {text!r}: unknown field(s) {', '.join(unknown)}"
                        f"{did_you_mean(unknown[0], SPEC_FIELDS)}; use {', '.join(SPEC_FIELDS)}")
    usable = [p for p in known_providers() if p != "address"]
    if data["provider"] not in known_providers():
        raise SpecError(f"--on {text!r}: unknown provider {data['provider']!r}"
                        f"{did_you_mean(data['provider'], usable)}; use one of {', '.join(usable)}")
    out = ClusterSpec.from_dict(data).to_dict()
    if confirm:
        out["confirm"] = True
    return out


def embedded_specs(meta: Any) -> dict[str, dict[str, Any]]:
    """The cluster specs a notebook carries, by cluster name (what ``cumulo run`` or ``share`` recorded)."""
    out: dict[str, dict[str, Any]] = {}
    entries = meta.get("clusters") if isinstance(meta, dict) else None
    for entry in entries or ():
        spec = {k: v for k, v in dict(entry.get("spec") or {}).items() if k in SPEC_FIELDS}
        if entry.get("name") and spec.get("provider") not in (None, "address"):
            out[str(entry["name"])] = spec
    return out
