"""The lock: which distributions the workers get, at which versions (sync, a list or a file, GPU mapping)."""

from __future__ import annotations

import base64
import fnmatch
import gzip
import hashlib
import json
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .. import config
from ..exceptions import SpecError

__all__ = ["DEFAULT_EXCLUDE", "RAPIDS", "Local", "Lock", "capture", "compact", "for_gpu", "from_requirements", "lock_for"]


#: Client-side tools no worker needs; their own dependencies drop out of the lock with them.
DEFAULT_EXCLUDE = (
    "pip", "setuptools", "wheel", "uv", "build", "hatch*", "jupyterlab", "jupyterlab-server", "jupyter-server*",
    "jupyter-lsp", "notebook", "notebook-shim", "nbclient", "nbconvert", "ipykernel", "playwright", "pytest*",
    "debugpy", "detect-secrets", "dask-gateway-server",
    # JupyterLab's Dask panes, and servers that only tests run (moto's AWS emulator, MLflow's tracking server and
    # UI): they would pull Jupyter's and Flask's stacks onto every worker
    "dask-labextension", "moto", "mlflow",
)


@dataclass(frozen=True)
class Local:
    """A distribution installed from a folder or file on this machine, to be built into a wheel."""

    name: str
    version: str
    source: str  # a directory with a pyproject.toml / setup.py, or a wheel file


@dataclass
class Lock:
    """The packages a host installs: pins from its index, plus local wheels this client builds."""

    python: str  # major.minor of the interpreter the venv needs
    pins: list[str] = field(default_factory=list)  # "name==version", sorted
    local: list[Local] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    #: Distributions left out, and why (shown to the user; nothing is dropped silently).
    left_out: dict[str, str] = field(default_factory=dict)
    wheel_digests: dict[str, str] = field(default_factory=dict)  # local wheel file name -> content digest

    @property
    def digest(self) -> str:
        """A short name for the venv: same python, pins and wheel sources -> same digest (local code aside)."""
        text = json.dumps([self.python, self.pins, self.find_links])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def local_digest(self) -> str:
        """A short name for the local code: an edit of an editable package changes only this."""
        return hashlib.sha256(json.dumps(sorted(self.wheel_digests.items())).encode()).hexdigest()[:16]

    def requirements_text(self) -> str:
        """The pins as a requirements file (local wheels are passed to uv by path)."""
        return "".join(p + "\n" for p in self.pins)

    def describe(self) -> dict[str, Any]:
        """What the registry records and the card shows: counts and names, no paths, no secrets."""
        return {"python": self.python, "digest": self.digest, "local_digest": self.local_digest,
                "packages": len(self.pins),
                "local": sorted(d.name for d in self.local), "left_out": dict(self.left_out)}


def _exclude_patterns() -> tuple[str, ...]:
    extra = config.get("env.exclude") or []
    return tuple(DEFAULT_EXCLUDE) + tuple(canonicalize_name(p) if "*" not in p else p.lower() for p in extra)


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _local_source(dist: metadata.Distribution) -> str | None:
    """The folder or file a distribution was installed from, when that is on this machine."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    url = str(info.get("url", ""))
    if not url.startswith("file://"):
        return None  # a VCS or https URL: pinned by version like any index package
    return url[len("file://"):]


def _requires(dist: metadata.Distribution, extras: set[str], env: dict[str, str]) -> set[tuple[str, frozenset[str]]]:
    """The (name, extras) this distribution needs in this environment with these extras."""
    found: set[tuple[str, frozenset[str]]] = set()
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None:
            if not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                continue
        found.add((canonicalize_name(req.name), frozenset(req.extras)))
    return found


def capture(*, extra_exclude: tuple[str, ...] = (), roots: tuple[str, ...] | None = None) -> Lock:
    """This interpreter's environment as a Lock (see the module docstring for what is kept).

    ``roots``: keep only these distributions and what they require (default: every top-level one)."""
    dists: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(canonicalize_name(name), dist)
    env = default_environment()
    needed_by_others: set[str] = set()
    for name, dist in dists.items():
        needed_by_others |= {n for n, _ in _requires(dist, set(), env)}
    patterns = _exclude_patterns() + tuple(extra_exclude)
    if roots is None:
        roots = tuple(n for n in dists if n not in needed_by_others and not _excluded(n, patterns))
    keep: dict[str, set[str]] = {}
    todo = [(n, frozenset()) for n in roots]
    while todo:
        name, extras = todo.pop()
        if name not in dists or (name in keep and extras <= keep[name]):
            continue
        keep.setdefault(name, set()).update(extras)
        for dep in _requires(dists[name], set(extras), env):
            todo.append(dep)
    lock = Lock(python=f"{sys.version_info.major}.{sys.version_info.minor}",
                find_links=[str(p) for p in config.get("env.find-links") or []])
    for name in sorted(dists):
        if name not in keep:
            if _excluded(name, patterns):
                lock.left_out[name] = "client-only (cumulo.env.exclude)"
            continue
        dist = dists[name]
        source = _local_source(dist)
        if source is not None:
            lock.local.append(Local(name, dist.version, source))
        else:
            lock.pins.append(f"{name}=={dist.version}")
    return lock


def from_requirements(requirements: list[str] | str | Path) -> Lock:
    """A Lock from a requirements list or file (``environment=[...]`` or a file); cumulo
    itself is added at this client's version so that the workers can run cumulo's code."""
    if isinstance(requirements, (str, Path)):
        path = Path(requirements)
        if not path.is_file():
            raise SpecError(f"environment={str(requirements)!r}: no such requirements file (or use 'sync' / 'none')")
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    else:
        lines = [str(r).strip() for r in requirements]
    pins = []
    for line in filter(None, lines):
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise SpecError(f"environment entry {line!r} is not a requirement ({exc}); write e.g. 'polars==1.20'") \
                from None
        pins.append(line)
    # cumulo (so that the workers can run its code) with everything it needs, at this client's versions
    lock = capture(roots=("cumulo", "dask", "distributed", "cloudpickle"))
    named = {canonicalize_name(Requirement(p).name) for p in pins}
    lock.pins = sorted(pins + [p for p in lock.pins if p.split("==")[0] not in named])
    lock.local = [d for d in lock.local if d.name not in named]
    return lock


def lock_for(environment: str | list[str] | None, *, default: str = "sync") -> Lock | None:
    """The Lock a spec's ``environment=`` asks for (None: 'none', install nothing)."""
    choice = default if environment is None else environment
    if choice == "none":
        return None
    if choice == "sync":
        return capture()
    return from_requirements(choice)


#: On GPU workers: the RAPIDS builds matching cumulo's dask range (the `gpu` extra), and the CUDA
#: builds of packages a CPU client runs as CPU builds.
RAPIDS = ("cudf-cu12>=26.10,<26.12", "dask-cudf-cu12>=26.10,<26.12", "dask-cuda>=26.10,<26.12")
_CPU_BUILDS = {"xgboost-cpu": "xgboost"}


def for_gpu(lock: Lock) -> Lock:
    """The lock for GPU workers: RAPIDS added, CPU-only builds swapped for their CUDA builds.

    ``torch==2.13.0+cpu`` becomes ``torch==2.13.0`` (the index's default Linux build is CUDA),
    ``xgboost-cpu`` becomes ``xgboost``; packages the GPU side already brings stay as pinned."""
    pins = []
    for pin in lock.pins:
        name, _, version = pin.partition("==")
        if "+cpu" in version:
            version = version.split("+", 1)[0]
        pins.append(f"{_CPU_BUILDS.get(name, name)}=={version}")
    have = {p.split("==")[0] for p in pins}
    pins += [r for r in RAPIDS if canonicalize_name(Requirement(r).name) not in have]
    return Lock(python=lock.python, pins=sorted(pins), local=list(lock.local), find_links=list(lock.find_links),
                left_out=dict(lock.left_out), wheel_digests=dict(lock.wheel_digests))


def compact(lock: Lock) -> str:
    """The pins as gzip+base64 text, small enough for a first-boot script (see bootstrap.py)."""
    return base64.b64encode(gzip.compress(lock.requirements_text().encode(), mtime=0)).decode()
