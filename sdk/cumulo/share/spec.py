"""The cluster spec and last run a notebook carries under ``metadata.cumulo``, written and read back.

:func:`notebook_clusters` finds which clusters a notebook used (see :mod:`cumulo.share`);
:func:`from_notebook` and :func:`merge_spec_from` (``connect(spec_from=...)``) read them back.

A shared notebook comes from someone else, so what it asks the workers to install is taken
only as far as the recipient allows (``cumulo.share.allow-requirements``, :data:`ALLOW_REQUIREMENTS`):
by default ``name==version`` pins from the package index only. A direct URL, path or VCS
requirement would run its author's build code on the recipient's machine and workers; a
requirements file names a file on the author's machine; index URLs and find-links are never
taken from a notebook at all (they come from the recipient's own config).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config
from .._version import __version__
from ..cost.metering import spend_of
from ..exceptions import ConfigError, SpecError
from ..life.registry import Registry
from ..spec import ClusterSpec
from .lines import estimate_line, last_run_line
from .notebook import _read

if TYPE_CHECKING:
    from ..life.registry import ClusterRecord

__all__ = [
    "ALLOW_REQUIREMENTS",
    "HARDWARE_FIELDS",
    "METADATA_KEY",
    "METADATA_VERSION",
    "SPEC_FIELDS",
    "carried_environment",
    "cluster_entry",
    "from_notebook",
    "merge_spec_from",
    "notebook_clusters",
    "run_summary",
]

#: Where cumulo keeps its facts in a notebook's metadata.
METADATA_KEY = "cumulo"
#: Version of the ``metadata.cumulo`` layout (bumped when a field changes meaning).
METADATA_VERSION = 1
#: The ClusterSpec fields a shared notebook carries; never name, address, env or options.
SPEC_FIELDS = ("provider", "workers", "threads_per_worker", "memory_limit", "gpu", "gpus_per_worker",
               "instance_type", "region", "spot", "budget", "idle_timeout", "image", "environment")
#: Spec fields that describe one provider's hardware: dropped when a spec is used with another provider.
HARDWARE_FIELDS = ("gpu", "gpus_per_worker", "instance_type", "region", "spot", "image")
#: What ``cumulo.share.allow-requirements`` may be, narrowest first: what a notebook's ``environment`` may hold.
ALLOW_REQUIREMENTS = {
    "pinned": "name==version pins from your package index",
    "index": "any requirement resolved from your package index (version ranges, unpinned names)",
    "any": "also direct URL, path and VCS requirements (their build code runs where they are resolved)",
}


_NAME = r"[a-z0-9][a-z0-9_.\-]{0,62}"
_NAME_ARG = re.compile(r"\bname\s*=\s*[\"'](" + _NAME + r")[\"']")
_NAME_SHOWN = (re.compile(r"cumulo cluster (" + _NAME + r")"), re.compile(r"<cumulo\.Cluster '(" + _NAME + r")'"))


def _names_shown(nb: Any) -> list[str]:
    """Cluster names the notebook itself shows: connect(name=...) arguments, the card and repr in outputs."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "connect(" in cell.source:
            names += _NAME_ARG.findall(cell.source)
        for out in cell.get("outputs") or ():
            texts = [out.get("text", "")] + [v for v in (out.get("data") or {}).values() if isinstance(v, str)]
            for t in texts:
                for rx in _NAME_SHOWN:
                    names += rx.findall(t)
    return list(dict.fromkeys(names))


def _versions() -> dict[str, str]:
    import dask
    import distributed

    return {"cumulo": __version__, "dask": dask.__version__, "distributed": distributed.__version__,
            "python": ".".join(map(str, sys.version_info[:3]))}


def _spend(rec: ClusterRecord) -> tuple[float | None, str, str]:
    """(amount, kind, basis) of a row's spend, from the row alone."""
    if rec.rate_per_hour is not None:
        s = spend_of(rec, None)
        return s.amount, s.kind, s.basis
    if rec.cost is not None:
        return float(rec.cost), rec.cost_kind or "estimate", "worker-time x configured rate, recorded by its kernel"
    return None, "none", "no rate set"


def cluster_entry(rec: ClusterRecord) -> dict[str, Any]:
    """What a notebook carries about one cluster: its spec (no address, secrets or paths) and its run."""
    spec: dict[str, Any] = {k: rec.spec[k] for k in SPEC_FIELDS
                            if rec.spec.get(k) is not None and not (k == "spot" and rec.spec[k] is False)}
    spec["provider"] = rec.provider  # what was asked for; what ran (workers, GPUs) is beside it
    lifetime = max(0.0, (rec.closed or time.time()) - rec.created)
    amount, kind, basis = _spend(rec)
    options = rec.spec.get("options") if isinstance(rec.spec.get("options"), dict) else {}
    return {
        "name": rec.name,
        "provider": rec.provider,
        "workers": rec.workers if rec.workers is not None else spec.get("workers"),
        "gpu": spec.get("gpu") or rec.gpu_model,
        "gpu_model": rec.gpu_model,
        "gpus": rec.gpus or 0,
        "gpus_per_worker": spec.get("gpus_per_worker"),
        "backend": rec.backend,
        # cumulo does not capture environment locks yet (DESIGN's env/): a reference appears here once it does
        "env_lock": options.get("env_lock"),
        "spec": spec,
        "run": {
            "seconds": round(lifetime, 1),
            "gpu_hours": round((rec.gpus or 0) * lifetime / 3600.0, 4),
            "cost": None if amount is None else round(amount, 4),
            "cost_kind": kind,
            "cost_basis": basis,
            "rate_per_hour": rec.rate_per_hour,
            "state": rec.state,
        },
        "registry_id": rec.id,
    }


def run_summary(entries: list[dict[str, Any]], *, wall_seconds: float | None, date: str | None,
                source: str, status: str = "ok") -> dict[str, Any]:
    """The last measured run of a notebook, from its clusters' entries (:func:`cluster_entry`)."""
    costs = [e["run"]["cost"] for e in entries if e["run"].get("cost") is not None]
    bases = sorted({e["run"]["cost_basis"] for e in entries if e["run"].get("cost") is not None})
    unpriced = [e["name"] for e in entries if e["run"].get("cost") is None]
    basis = "; ".join(bases) if bases else "no rate set"
    if costs and unpriced:
        basis += f" (no rate for {', '.join(unpriced)})"
    kinds = {e["run"].get("cost_kind") for e in entries if e["run"].get("cost") is not None}
    return {
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1),
        "gpu_hours": round(sum(e["run"].get("gpu_hours") or 0.0 for e in entries), 4),
        "cost": round(sum(costs), 4) if costs else None,
        "cost_kind": "billed" if kinds == {"billed"} else ("estimate" if costs else "none"),
        "cost_basis": basis,
        "date": date or datetime.now(UTC).date().isoformat(),
        "versions": _versions(),
        "status": status,
        "source": source,
    }


def _rows_for(names: list[str], registry: Registry, before: float) -> list[ClusterRecord]:
    rows = registry.list(include_closed=True)
    chosen = []
    for name in names:
        mine = [r for r in rows if r.name == name and r.created <= before]
        if mine:
            chosen.append(max(mine, key=lambda r: r.created))
    return chosen


def notebook_clusters(nb: Any, path: Path | None = None, registry: Registry | None = None) -> dict[str, Any] | None:
    """``metadata.cumulo`` for a notebook: what ``cumulo run`` recorded, else registry rows matched by name.

    None when neither says anything (the notebook started no cluster cumulo knows of).
    """
    meta = dict(nb.metadata.get(METADATA_KEY) or {})
    if meta.get("clusters"):
        return meta
    if registry is None:
            registry = Registry()
    before = (path.stat().st_mtime if path is not None and path.exists() else time.time()) + 60.0
    rows = _rows_for(_names_shown(nb), registry, before)
    if not rows:
        return None
    entries = [cluster_entry(r) for r in rows]
    start = min(r.created for r in rows)
    end = max((r.closed or time.time()) for r in rows)
    date = datetime.fromtimestamp(end, UTC).date().isoformat()
    summary = run_summary(entries, wall_seconds=end - start, date=date,
                          source="registry rows matched by the cluster names the notebook shows "
                                 "(wall time: first cluster start to last close; versions: this machine)")
    return {"version": METADATA_VERSION, "clusters": entries, "last_run": summary}


def _clean_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Only the fields a shared notebook carries: no registry ids, addresses, paths or free text from rows."""
    clusters = []
    for e in meta.get("clusters") or ():
        if not isinstance(e, dict):
            continue
        spec = {k: v for k, v in dict(e.get("spec") or {}).items() if k in SPEC_FIELDS}
        spec.setdefault("provider", e.get("provider") or "local")
        keep = {k: e.get(k) for k in ("name", "provider", "workers", "gpu", "gpu_model", "gpus", "gpus_per_worker",
                                      "backend", "env_lock")}
        run = {k: v for k, v in dict(e.get("run") or {}).items()
               if k in ("seconds", "gpu_hours", "cost", "cost_kind", "cost_basis", "rate_per_hour")}
        clusters.append({**keep, "spec": spec, "run": run})
    last = {k: v for k, v in dict(meta.get("last_run") or {}).items()
            if k in ("wall_seconds", "gpu_hours", "cost", "cost_kind", "cost_basis", "date", "versions", "status",
                     "source", "parameters")}
    out: dict[str, Any] = {"version": METADATA_VERSION, "clusters": clusters}
    if last:
        out["last_run"] = last
    return out


# -- reading a shared notebook ----------------------------------------------------------------


def _entry(meta: dict[str, Any] | None, path: Path, cluster: str | int | None) -> dict[str, Any]:
    clusters = list((meta or {}).get("clusters") or ())
    if not clusters:
        raise SpecError(
            f"{path.name} carries no cluster spec (no metadata.cumulo.clusters): it was not run with `cumulo run` "
            "or shared with `cumulo share` after a run; pass the spec to connect() yourself")
    if cluster is None:
        return dict(clusters[0])
    if isinstance(cluster, int) and not isinstance(cluster, bool):
        if not 0 <= cluster < len(clusters):
            raise SpecError(f"{path.name} has {len(clusters)} cluster spec(s); cluster={cluster} is out of range")
        return dict(clusters[cluster])
    for e in clusters:
        if e.get("name") == cluster:
            return dict(e)
    names = ", ".join(str(e.get("name")) for e in clusters)
    raise SpecError(f"{path.name} has no cluster named {cluster!r}; it has: {names}")


def _allowed() -> str:
    """The recipient's ``cumulo.share.allow-requirements`` (read here: connect() validates config later)."""
    level = config.get("share.allow-requirements")
    if level not in ALLOW_REQUIREMENTS:
        raise ConfigError(f"cumulo.share.allow-requirements={level!r}: use one of {', '.join(ALLOW_REQUIREMENTS)}")
    return str(level)


def _why_not(entry: str, level: str) -> tuple[str, str | None] | None:
    """Why a notebook's requirement is not taken at ``level``, and the level that would take it (None: taken)."""
    from packaging.requirements import InvalidRequirement, Requirement

    text = entry.strip()
    if text.startswith("-"):
        return "an installer option: index URLs, find-links and other options never come from a notebook", None
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return "not a requirement", None
    if req.url:
        if level == "any":
            return None
        return "a direct URL, path or VCS requirement: its build code would run on your machine and workers", "any"
    pins = list(req.specifier)
    if level != "pinned" or (len(pins) == 1 and pins[0].operator == "==" and "*" not in pins[0].version):
        return None
    return "not pinned to one version (name==version)", "index"


def carried_environment(environment: Any, source: str) -> str | list[str] | None:
    """A notebook's ``environment`` as the recipient allows it (``cumulo.share.allow-requirements``).

    'sync', 'none' and None pass (they name the recipient's own packages or none); a list passes
    when every entry is allowed (by default: ``name==version`` pins only); a requirements file
    path never does (it names a file on the author's machine). SpecError names each entry that
    is not taken and says how to go on, before anything is resolved, built or started."""
    if environment is None or environment in ("sync", "none"):
        return None if environment is None else str(environment)
    level = _allowed()
    yourself = "pass environment= yourself, e.g. environment='sync' (your own packages) or ['polars==1.20', ...]"
    if isinstance(environment, str):
        raise SpecError(f"{source} names a requirements file for the workers ({environment!r}), a file on its "
                        f"author's machine that a shared notebook cannot bring: {yourself}")
    if not isinstance(environment, (list, tuple)):
        raise SpecError(f"{source} carries environment={environment!r}, which is not 'sync', 'none' or a list of "
                        f"requirements: {yourself}")
    refused = []
    wider = set()
    for entry in environment:
        why = _why_not(str(entry), level)
        if why is not None:
            refused.append(f"  {str(entry)!r}: {why[0]}")
            wider.add(why[1])
    if not refused:
        return [str(e) for e in environment]
    allow = ""
    if None not in wider:
        need = "any" if "any" in wider else "index"
        allow = (f", or, if you trust its author, allow {ALLOW_REQUIREMENTS[need]} with "
                 f"dask.config.set({{'cumulo.share.allow-requirements': {need!r}}})")
    raise SpecError(
        f"{source} asks the workers to install what a shared notebook may not bring (cumulo.share.allow-requirements "
        f"is {level!r}: {ALLOW_REQUIREMENTS[level]}):\n" + "\n".join(refused) + "\nNothing was resolved or "
        f"started. Pass environment= yourself (e.g. environment='sync' for your own packages){allow}")


def _field(key: str, value: Any) -> str:
    """One spec field as people read it: 'budget $5.00', 'idle timeout 600 s', 'workers=4'."""
    if key == "budget" and isinstance(value, (int, float)):
        return f"budget ${value:,.2f}"
    if key == "idle_timeout" and isinstance(value, (int, float)):
        return f"idle timeout {value:g} s"
    return f"{key}={value!r}"


def _carried_lines(name: str, spec: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """What connect(spec_from=...) takes from a notebook (and what the caller's arguments replace), environment
    included, shown before anything launches."""
    taken = {k: spec[k] for k in SPEC_FIELDS if k in spec and k != "environment"}
    line = f"cumulo: {name}: from the notebook: " + (", ".join(_field(k, v) for k, v in taken.items()) or "nothing")
    yours = {k: v for k, v in mine.items() if k in taken}
    if yours:
        line += "; yours instead: " + ", ".join(_field(k, v) for k, v in yours.items())
    lines = [line]
    env = spec.get("environment")
    if "environment" in mine and env is not None:
        lines.append(f"cumulo: {name}: the workers' environment: yours ({mine['environment']!r}), not the notebook's")
    elif isinstance(env, list):
        lines.append(f"cumulo: {name}: the workers' environment from the notebook: {len(env)} requirement(s): "
                     + (", ".join(env) or "none"))
    elif env is not None:
        lines.append(f"cumulo: {name}: the workers' environment from the notebook: {env!r}")
    return lines


def from_notebook(path: str | os.PathLike[str], *, cluster: str | int | None = None) -> ClusterSpec:
    """The cluster spec a shared (or ``cumulo run``) notebook carries, as a validated ClusterSpec.

    ``cluster``: which one, by name or position, when the notebook used several (default: the first).
    ``spec.to_dict()`` gives plain data; ``cumulo.connect(spec_from=path)`` launches it.
    """
    p = Path(path).expanduser()
    entry = _entry(_read(p).metadata.get(METADATA_KEY), p, cluster)
    spec = {k: v for k, v in dict(entry.get("spec") or {}).items() if k in SPEC_FIELDS}
    if "environment" in spec:
        spec["environment"] = carried_environment(spec["environment"], p.name)
    return ClusterSpec.from_dict(spec)


def merge_spec_from(spec_from: str | os.PathLike[str], target: str | None, spec_fields: dict[str, Any], *,
                    say: Callable[[str], None] = print) -> tuple[str, dict[str, Any]]:
    """connect(spec_from=...): the notebook's spec under what the caller passed, with the last run shown.

    The notebook gives the provider (when ``target`` is None) and every spec field the caller did
    not pass. With another provider than the notebook's, its hardware fields (gpu, instance
    type, region, ...) are dropped. The notebook's ``environment`` is taken only as the
    recipient allows (:func:`carried_environment`; not checked when the caller passes its own).
    Before returning, ``say`` gets the last-run line, the current estimate and every field
    taken from the notebook (environment included), so a launch shows all of it before anything starts.
    """
    p = Path(spec_from).expanduser()
    meta = _read(p).metadata.get(METADATA_KEY)
    entry = _entry(meta, p, None)
    spec = {k: v for k, v in dict(entry.get("spec") or {}).items() if k in SPEC_FIELDS}
    if "environment" in spec and "environment" not in spec_fields:
        spec["environment"] = carried_environment(spec["environment"], p.name)
    provider = spec.pop("provider", "local")
    taken = {"provider": provider} if target is None else {}
    if target is None:
        if provider == "address":
            raise SpecError(
                f"{p.name} ran on a scheduler given by address, which a shared notebook does not carry: pass it, "
                f"e.g. cumulo.connect('tls://host:8786', spec_from={str(spec_from)!r})")
        target = provider
    elif target != provider:
        dropped = [k for k in HARDWARE_FIELDS if k in spec]
        for k in dropped:
            spec.pop(k)
        if dropped:
            say(f"cumulo: {p.name} ran on {provider}; not carrying its {', '.join(dropped)} over to {target}")
    merged = {**spec, **spec_fields}
    line = last_run_line(meta, entry)
    if line:
        say(f"cumulo: {p.name}: {line}")
    say(f"cumulo: {p.name}: {estimate_line(meta, {**entry, 'spec': {**merged, 'provider': target}})}")
    for carried in _carried_lines(p.name, {**taken, **spec}, spec_fields):
        say(carried)
    return target, merged
