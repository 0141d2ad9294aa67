"""What the workers run: the notebook's environment, captured as a lock that hosts install with uv.

Coiled's package sync is the model: the cluster gets the client's packages at
the client's versions, local and editable ones included, without a Dockerfile.
:func:`capture` reads this interpreter's distributions and keeps the top-level
ones (those nothing else requires) minus client-only tools (the notebook front
end, test runners, build tools: ``cumulo.env.exclude``), with everything they
require, pinned at the installed version. Distributions installed from a local
folder or file (editable ones, cumulo itself during development) cannot be
fetched by a host, so they are built into wheels here (:func:`build_wheels`)
and shipped over the provider's authenticated channel, never a public URL.

The lock's :attr:`Lock.digest` names the environment: a host keeps one venv per
digest and reuses it when the lock matches. :func:`install_script` is the shell
a host runs to build that venv; it is transport-neutral (SSH runs it today).
Nothing here holds secrets: index URLs with credentials stay in the host's own
uv configuration.
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import config
from .exceptions import EnvironmentSyncError, SpecError

__all__ = ["Local", "Lock", "build_wheels", "capture", "check_resolvable", "compact", "for_gpu", "from_requirements",
           "install_script", "lock_for", "prepare", "Prepared", "recorded", "ship_wheels"]

#: Client-side tools no worker needs; their own dependencies drop out of the lock with them.
DEFAULT_EXCLUDE = (
    "pip", "setuptools", "wheel", "uv", "build", "hatch*", "jupyterlab", "jupyterlab-server", "jupyter-server*",
    "jupyter-lsp", "notebook", "notebook-shim", "nbclient", "nbconvert", "ipykernel", "playwright", "pytest*",
    "debugpy", "detect-secrets", "dask-gateway-server",
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


def _wheel_digest(path: Path) -> str:
    """A digest of a wheel's contents (not its zip timestamps), so rebuilding unchanged code reuses the venv."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.filename.endswith(".dist-info/RECORD"):
                continue
            h.update(info.filename.encode())
            h.update(zf.read(info))
    return h.hexdigest()[:16]


def build_wheels(lock: Lock, out: Path) -> list[Path]:
    """Build every local distribution of ``lock`` into a wheel under ``out`` (uv build, else pip wheel)."""
    out.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for dist in lock.local:
        src = Path(dist.source)
        if src.is_file() and src.suffix == ".whl":
            wheels.append(src)
        elif src.is_dir():
            before = set(out.glob("*.whl"))
            cmd = ([_uv(), "build", "--wheel", "--out-dir", str(out), str(src)] if _uv()
                   else [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)])
            done = subprocess.run(cmd, capture_output=True, text=True)
            made = sorted(set(out.glob("*.whl")) - before)
            if done.returncode != 0 or not made:
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                raise EnvironmentSyncError(
                    f"could not build local package {dist.name} from {src} into a wheel for the workers:\n  "
                    + "\n  ".join(tail) + "\nFix its build, or install it from an index and reconnect")
            wheels.extend(made)
        else:
            raise EnvironmentSyncError(
                f"local package {dist.name} was installed from {src}, which no longer exists; reinstall it "
                "(pip install -e PATH) or leave it out with cumulo.env.exclude")
    lock.wheel_digests = {w.name: _wheel_digest(w) for w in wheels}
    return wheels


def _uv() -> str | None:
    """The uv executable of this environment (the `ssh` extra installs it), if any."""
    candidate = Path(sys.executable).with_name("uv")
    if candidate.exists():
        return str(candidate)
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return None


def uv_binary() -> Path | None:
    """This client's uv binary, which can be copied to a host of the same platform that has none."""
    found = _uv()
    return Path(found) if found else None


def client_platform() -> str:
    """'Linux-x86_64' style, compared with a host's `uname -sm` before shipping binaries."""
    return f"{platform.system()}-{platform.machine()}"


def install_script(lock: Lock, *, venv: str, python: str, uv: str, wheels_dir: str, timeout_s: float) -> str:
    """Shell that makes the lock's venv at ``venv`` on a host and prints what it did.

    A venv with ``.cumulo-ready`` is reused ('cumulo-env-reused'); when only the
    local code changed its wheels are reinstalled ('cumulo-env-updated'); a
    half-built venv (an interrupted install) is removed and rebuilt
    ('cumulo-env-built'). Runs under flock, so two connects to one host do not
    build the same venv at once."""
    q = shlex.quote
    links = " ".join(f"--find-links {q(f)}" for f in lock.find_links)
    wheels = " ".join(q(f"{wheels_dir}/{name}") for name in sorted(lock.wheel_digests))
    py, marker = q(venv + "/bin/python"), q(venv + "/.cumulo-local")
    update = (f"{q(uv)} pip install -q -p {py} --no-deps --reinstall {wheels}" if wheels else "true")
    return f"""set -e
mkdir -p {q(str(Path(venv).parent))}
exec 9>{q(venv + '.lock')}
flock -w {int(timeout_s)} 9
if [ -f {q(venv + '/.cumulo-ready')} ]; then
  if [ "$(cat {marker} 2>/dev/null)" = {q(lock.local_digest)} ]; then echo cumulo-env-reused; exit 0; fi
  {update}
  printf %s {q(lock.local_digest)} > {marker}
  echo cumulo-env-updated; exit 0
fi
rm -rf {q(venv)}
{q(uv)} venv -q -p {q(python)} {q(venv)}
{q(uv)} pip install -q -p {py} {links} -r {q(wheels_dir + '/requirements.txt')} {wheels}
printf %s {q(lock.local_digest)} > {marker}
touch {q(venv + '/.cumulo-ready')}
echo cumulo-env-built
"""


def compact(lock: Lock) -> str:
    """The pins as gzip+base64 text, small enough for a first-boot script (see bootstrap.py)."""
    return base64.b64encode(gzip.compress(lock.requirements_text().encode(), mtime=0)).decode()


def check_resolvable(lock: Lock, *, platform_tag: str = "x86_64-manylinux_2_28") -> None:
    """Resolve the pins for Linux x86-64 and the lock's Python without installing anything, so that a
    package the index lacks (or one with no Linux build) fails before any instance bills, by name.

    Needs uv (the `ssh` extra brings it); without uv the check is skipped with a log line."""
    uv = _uv()
    if uv is None:
        import logging

        logging.getLogger("cumulo").warning("cumulo: uv is not installed; the environment is checked on the workers")
        return
    cmd = [uv, "pip", "compile", "-q", "--no-header", "--python-version", lock.python, "--python-platform",
           platform_tag, "-o", os.devnull, "-"]
    for link in lock.find_links:
        cmd[3:3] = ["--find-links", link]
    done = subprocess.run(cmd, input=lock.requirements_text(), capture_output=True, text=True)
    if done.returncode != 0:
        text = (done.stderr or done.stdout).strip()
        named = _named_package(text)
        raise EnvironmentSyncError(
            (f"package {named!r} " if named else "the environment ") + "cannot be installed on Linux x86-64 "
            f"workers with Python {lock.python} (nothing was launched):\n  " + "\n  ".join(text.splitlines()[-6:])
            + "\nDrop it (cumulo.env.exclude), pin a version that exists, or pass environment=[...] "
            "with what the workers need")


def _named_package(text: str) -> str | None:
    """The package a resolver error is about, when it names one."""
    import re

    for pattern in (r"there is no version of ([A-Za-z0-9_.\-]+)", r"Because ([A-Za-z0-9_.\-]+) was not found",
                    r"([A-Za-z0-9_.\-]+) was not found in the package registry", r"No matching distribution found for "
                    r"([A-Za-z0-9_.\-]+)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return None


async def ship_wheels(client: Any, wheels: dict[str, bytes], digest: str) -> None:
    """Install local wheels on every worker, now and on each that joins later (worker plugin by value)."""
    import cloudpickle

    from . import _wheels

    cloudpickle.register_pickle_by_value(_wheels)
    await client.register_plugin(_wheels.InstallWheels(wheels, digest))


@dataclass
class Prepared:
    """An environment ready to send: the lock, its GPU mapping, and the local wheels' bytes."""

    lock: Lock
    gpu_lock: Lock | None
    wheels: dict[str, bytes]

    def describe(self) -> dict[str, Any]:
        """What the registry records (the lock's describe(), plus whether GPU workers get RAPIDS)."""
        return self.lock.describe() | {"gpu_mapping": self.gpu_lock is not None}


def prepare(environment: str | list[str] | None, *, gpu: bool, check: bool = True) -> Prepared | None:
    """Everything a provider sends for ``environment=`` (None for 'none'): the lock (checked to resolve
    for Linux x86-64 when ``check``, so that a missing package fails before anything bills), the GPU
    lock when ``gpu``, and the local packages built into wheels."""
    import tempfile

    lock = lock_for(environment)
    if lock is None:
        return None
    gpu_lock = for_gpu(lock) if gpu else None
    if check:
        for each in (lock, gpu_lock):
            if each is not None:
                check_resolvable(each)
    with tempfile.TemporaryDirectory(prefix="cumulo-wheels-") as tmp:
        wheels = {w.name: w.read_bytes() for w in build_wheels(lock, Path(tmp))}
    if gpu_lock is not None:
        gpu_lock.wheel_digests = dict(lock.wheel_digests)
    return Prepared(lock, gpu_lock, wheels)


def recorded(registry: Any, cluster_id: str) -> str | None:
    """The environment a cluster was given, as one line for its card and `cumulo usage` (None: none recorded,
    e.g. a local cluster, which runs this very environment)."""
    found = None
    for _, kind, message in registry.events(cluster_id):
        if kind == "environment":
            found = message
    if found is None:
        return None
    try:
        d = json.loads(found)
    except ValueError:
        return None
    local = f", local {', '.join(d['local'])}" if d.get("local") else ""
    gpu = ", RAPIDS on GPU workers" if d.get("gpu_mapping") else ""
    return f"{d.get('digest')} (python {d.get('python')}, {d.get('packages')} packages{local}{gpu})"
