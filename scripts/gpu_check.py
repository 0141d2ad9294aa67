"""The GPU check kit: prepare a wheelhouse here, prove cumulo's GPU path on a real NVIDIA machine there.

The GPU machine we can test on is lent rarely and briefly, reaches no package index and has
Python 3.12 with torch, CuPy, pandas, pyarrow and nvidia-ml-py but no dask. So:

  scripts/gpu-check --prepare [--wheelhouse DIR]    (here) download what that machine lacks and build
                                                    cumulo's wheel into DIR; refuse if it cannot travel
  scripts/gpu-check --wheelhouse DIR --out OUTDIR   (there) install DIR into a throw-away environment
                                                    and run the five steps, each bounded in time
  scripts/gpu-check --dry-run                       (anywhere) say what a run would do

Only the standard library is imported at the top: this file runs under the machine's own Python
before anything is installed, is re-imported by the worker processes dask spawns, and serves as a
small pytest plugin (``-p gpu_check``) for step 4. See docs/gpu-check.md.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
MIB = 1024 * 1024
#: What one device run can carry: the working tree plus the carried paths, together.
LIMIT_BYTES = 64 * MIB
DEFAULT_WHEELHOUSE = ROOT / "gpu-wheelhouse"
WORK = ROOT / "build" / "gpu-check"
MANIFEST = "MANIFEST.json"
TARGET_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
#: The whole run, install included, stays under this (the device allows 10 minutes per command).
DEFAULT_BUDGET_S = 420.0
INSTALL_LIMIT_S = 90.0

#: On the GPU machine already, and large: never carried (its own builds, made for its CUDA).
DEVICE_HAS = {"numpy", "pyarrow", "torch", "cupy-cuda13x", "fastrlock", "numba", "llvmlite", "triton",
              "sympy", "mpmath", "networkx", "setuptools"}
#: cumulo dependencies the check never uses (notebook widgets, with IPython and jedi): left behind to stay
#: small. bokeh (the dashboard) stays: rapids-dask-dependency, which dask-cuda pins, requires it.
LEFT_BEHIND = {"ipywidgets"}
#: Added to the project's own pins: dask-cuda imports cuda.core, which needs cuda.bindings. The
#: `cu13` extra would also bring the CUDA toolkit wheels (hundreds of MB); the machine's driver and
#: torch's CUDA libraries are enough for what dask-cuda does.
GPU_EXTRA = ("cuda-bindings>=13,<14",)
TEST_TOOLS = ("pytest", "pytest-timeout", "psutil")
#: The package names that must import on the GPU machine after the install.
MUST_IMPORT = ("dask", "distributed", "dask_cuda", "cuda.core", "cumulo", "pytest")
#: Versions shown in the report.
VERSIONS = ("cumulo", "dask", "distributed", "dask-cuda", "cuda-core", "cuda-bindings", "nvidia-ml-py", "torch",
            "cupy-cuda13x", "cupy", "numpy", "pandas", "pyarrow", "numba", "cudf-cu13", "cudf-cu12", "pytest")


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    what: str
    limit_s: float


STEPS = (
    Step("connect", "cumulo.connect() on the GPU machine",
         "cumulo.connect() picks LocalCUDACluster with one worker per GPU and reports the GPU model and "
         "memory; cluster.backend is cudf when cuDF imports, otherwise pandas (and cuDF is recorded as "
         "not tested)", 60),
    Step("ledger", "usage ledger and GPU-aware idle guard",
         "a ~20 s CuPy (or torch) matmul loop on the worker, outside any dask task: the usage ledger sees "
         "NVML utilisation, the idle guard (idle_timeout 8 s) does not fire during the load and does fire "
         "after it; NVML power draw sampled alongside", 90),
    Step("train", "cumulo.train.torch with NCCL",
         "cumulo.train.torch runs 20 DDP steps of a small MLP with NCCL, one rank per GPU (world size 1 on "
         "one GPU); the loss must fall", 90),
    Step("tests", "the gpu-marked tests",
         "pytest -m gpu on the test files that carry the marker; tests marked cudf are skipped and named "
         "where cuDF is not installed, and tests that import what is missing (xgboost) skip with that reason",
         150),
    Step("bench", "dask array reduction, CuPy vs NumPy",
         "sum of squares and standard deviation of a 16384x16384 float64 dask array (2 GiB): CuPy chunks "
         "on the GPU worker vs NumPy chunks on the machine's CPU cores (threaded scheduler), as a ratio", 60),
)
STEP_NAMES = tuple(s.name for s in STEPS)


class SizeError(Exception):
    """The wheelhouse (with the working tree) is larger than a device run can carry."""


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


# ---------------------------------------------------------------------------------- sizes


def dir_size(path: Path) -> int:
    """Bytes of every regular file under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def tree_size(root: Path = ROOT) -> int:
    """Bytes of what a device run copies besides the carried paths: tracked and untracked, not ignored."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    total = 0
    for name in set(out.decode(errors="replace").split("\0")):
        p = root / name
        if name and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def check_size(wheelhouse: Path, *, limit: int = LIMIT_BYTES, other: int = 0) -> int:
    """The wheelhouse's size in bytes; SizeError if it and ``other`` (the working tree) exceed ``limit``."""
    size = dir_size(wheelhouse)
    if size + other > limit:
        extra = f" plus the working tree's {mib(other)}" if other else ""
        raise SizeError(
            f"the wheelhouse {wheelhouse} is {mib(size)}{extra}, over the {mib(limit)} a device run can carry. "
            "Drop packages added with --with, or carry fewer paths; nothing was sent anywhere."
        )
    return size


# ---------------------------------------------------------------------------------- GPUs


def find_gpus() -> tuple[list[dict[str, Any]], str]:
    """The NVIDIA GPUs of this machine (name, memory in bytes) and, when there are none, why not."""
    reasons = []
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            out = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else str(name),
                            "memory": int(pynvml.nvmlDeviceGetMemoryInfo(h).total)})
            if out:
                return out, ""
            reasons.append("NVML reports 0 devices")
        finally:
            pynvml.nvmlShutdown()
    except ImportError:
        reasons.append("NVML: pynvml (nvidia-ml-py) is not installed")
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        reasons.append(f"NVML: {type(exc).__name__}: {exc}")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        reasons.append("nvidia-smi: not found")
    else:
        try:
            res = subprocess.run([smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20)
            rows = [r.split(",") for r in res.stdout.strip().splitlines() if r.strip()]
            gpus = [{"index": int(r[0]), "name": r[1].strip(), "memory": int(float(r[2])) * MIB} for r in rows
                    if len(r) >= 3]
            if res.returncode == 0 and gpus:
                return gpus, ""
            reasons.append(f"nvidia-smi: exit {res.returncode}: {(res.stderr or res.stdout).strip()[:200]}")
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            reasons.append(f"nvidia-smi: {exc}")
    return [], "; ".join(reasons)


def driver_facts() -> dict[str, Any]:
    """Driver and CUDA versions from NVML (empty where NVML is absent)."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            return {"driver": drv.decode() if isinstance(drv, bytes) else str(drv),
                    "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}"}
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return {}


# ---------------------------------------------------------------------------------- prepare


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """What the GPU machine needs, with the project's own pins: the core (less LEFT_BEHIND), dask-cuda
    from the ``gpu`` extra (without its CUDA 12 extra), cuda-bindings for CUDA 13, the test tools."""
    project = _pyproject()["project"]
    out = [r for r in project["dependencies"] if _name(r) not in LEFT_BEHIND]
    out = [r.replace("dask[dataframe]", "dask[dataframe,array]") for r in out]
    for r in project["optional-dependencies"]["gpu"]:
        if _name(r) == "dask-cuda":
            out.append(re.sub(r"\[[^\]]*\]", "", r))
    out += GPU_EXTRA
    test = {_name(r): r for r in project["optional-dependencies"]["test"]}
    out += [test.get(t, t) for t in TEST_TOOLS]
    out += list(extra)
    return out


def _local_constraints() -> list[str]:
    """``name==version`` of this environment's packages, so the GPU machine runs what the CPU suite runs."""
    from importlib import metadata

    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        version = dist.version or ""
        if name and name != "cumulo" and "+" not in version and name not in seen:
            seen[name] = version
    return [f"{n}=={v}" for n, v in sorted(seen.items())]


def _pip(*args: str, python: str | None = None, timeout: float = 600, env: dict[str, str] | None = None,
         log: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [python or sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}\n")
    return res


def _platform_args(python_version: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python_version]
    for p in PLATFORMS:
        args += ["--platform", p]
    return args


def _resolve(reqs: list[str], python_version: str, constraints: list[str], log: Path) -> list[dict[str, str]]:
    """The full dependency closure for the target Python and platform, as (name, version) rows."""
    WORK.mkdir(parents=True, exist_ok=True)
    req_file, con_file, report = WORK / "requirements.in", WORK / "constraints.txt", WORK / "resolve.json"
    req_file.write_text("\n".join(reqs) + "\n")
    con_file.write_text("\n".join(constraints) + "\n")
    args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            *_platform_args(python_version), "--target", str(WORK / "resolve-target"), "-r", str(req_file)]
    res = _pip(*args, *(["-c", str(con_file)] if constraints else []), log=log)
    if res.returncode != 0:
        raise RuntimeError(f"pip could not resolve {reqs}:\n{res.stderr.strip()[-2000:]}")
    rows = json.loads(report.read_text())["install"]
    return [{"name": r["metadata"]["name"].lower().replace("_", "-"), "version": r["metadata"]["version"]}
            for r in rows]


def _sources_hash(root: Path = ROOT) -> str:
    """A hash of cumulo's Python package as it is in the working tree (what its wheel is built from)."""
    h = hashlib.sha256()
    base = root / "sdk" / "cumulo"
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base).as_posix()
        if not p.is_file() or "__pycache__" in rel or rel.startswith("labextension/") or p.suffix == ".pyc":
            continue
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build_cumulo_wheel(wheelhouse: Path, log: Path) -> Path:
    """cumulo's wheel, built without build isolation in a small cached environment (hatchling and the
    jupyter-builder hook only). SKIP_JUPYTER_BUILDER keeps the front end out of it: the labextension is
    packed as it is when present, and the GPU machine never needs it."""
    env_dir = WORK / "buildenv"
    py = env_dir / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    project = _pyproject()
    needs = list(project["build-system"]["requires"])
    needs = [r for r in needs if _name(r) in ("hatchling", "hatch-jupyter-builder")]
    if _pip("install", "--quiet", *needs, python=str(py), log=log).returncode != 0:
        raise RuntimeError(f"could not install {needs} into {env_dir}; see {log}")
    for old in wheelhouse.glob("cumulo-*.whl"):
        old.unlink()
    env = {**os.environ, "SKIP_JUPYTER_BUILDER": "1"}
    res = _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheelhouse), str(ROOT),
               python=str(py), env=env, log=log)
    built = sorted(wheelhouse.glob("cumulo-*.whl"))
    if res.returncode != 0 or not built:
        raise RuntimeError(f"building cumulo's wheel failed:\n{res.stderr.strip()[-2000:]}")
    return built[-1]


def prepare(wheelhouse: Path, *, python_version: str = TARGET_PYTHON, extra: tuple[str, ...] = (),
            match_local: bool = True, limit: int = LIMIT_BYTES) -> int:
    """Build the wheelhouse; print and record its size; non-zero if it cannot travel."""
    t0 = time.monotonic()
    wheelhouse = wheelhouse.resolve()
    wheelhouse.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "prepare.log"
    log.write_text("")
    reqs = requirements(extra)
    say(f"gpu-check --prepare: Python {python_version}, {', '.join(PLATFORMS)}; wheelhouse {wheelhouse}")
    say("  requirements: " + "; ".join(reqs))
    constraints = _local_constraints() if match_local else []
    versions_note = "pinned to this environment's versions where it has them" if constraints else \
        "the newest that match the project's pins"
    try:
        closure = _resolve(reqs, python_version, constraints, log)
    except RuntimeError as exc:
        if not constraints:
            raise
        say(f"  this environment's versions do not all resolve for Python {python_version}; "
            f"using the newest that match the project's pins ({str(exc).splitlines()[-1][:200]})")
        versions_note = "the newest that match the project's pins (this environment's did not resolve)"
        closure = _resolve(reqs, python_version, [], log)
    asked = {_name(e) for e in extra}
    carried = [r for r in closure if r["name"] in asked or (r["name"] not in DEVICE_HAS and not
               (r["name"].startswith("nvidia-") and r["name"] != "nvidia-ml-py"))]
    skipped = sorted(r["name"] for r in closure if r not in carried)
    say(f"  resolved {len(closure)} packages; carrying {len(carried)}, leaving {', '.join(skipped) or 'none'} "
        f"to the GPU machine; not carried at all: {', '.join(sorted(LEFT_BEHIND))} (unused by the check)")
    keep: set[Path] = set()
    pins = [f"{r['name']}=={r['version']}" for r in carried]
    res = _pip("download", "--quiet", "--no-deps", *_platform_args(python_version), "-d", str(wheelhouse), *pins,
               log=log, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"pip download failed:\n{res.stderr.strip()[-2000:]}")
    wheels = {}
    for w in wheelhouse.glob("*.whl"):
        name = w.name.split("-")[0].lower().replace("_", "-")
        version = w.name.split("-")[1]
        wheels[(name, version)] = w
    for r in carried:
        w = wheels.get((r["name"], r["version"]))
        if w is None:
            raise RuntimeError(f"pip download left no wheel for {r['name']}=={r['version']}")
        keep.add(w)
    cumulo_whl = _build_cumulo_wheel(wheelhouse, log)
    keep.add(cumulo_whl)
    for stale in wheelhouse.glob("*.whl"):
        if stale not in keep:
            stale.unlink()
    rows = []
    for w in sorted(keep, key=lambda p: p.name.lower()):
        rows.append({"file": w.name, "name": w.name.split("-")[0].lower().replace("_", "-"),
                     "version": w.name.split("-")[1], "bytes": w.stat().st_size,
                     "sha256": hashlib.sha256(w.read_bytes()).hexdigest()})
    seconds = time.monotonic() - t0
    manifest = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python_version": python_version,
        "platforms": list(PLATFORMS),
        "requirements": reqs,
        "versions": versions_note,
        "left_to_device": skipped,
        "left_behind": sorted(LEFT_BEHIND),
        "cumulo_sources": _sources_hash(),
        "wheels": rows,
        "wheels_bytes": sum(r["bytes"] for r in rows),
        "prepare_seconds": round(seconds, 1),
    }
    (wheelhouse / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (wheelhouse / "requirements.txt").write_text("".join(f"{r['name']}=={r['version']}\n" for r in rows))
    tree = tree_size()
    size = dir_size(wheelhouse)
    for r in sorted(rows, key=lambda r: -r["bytes"])[:8]:
        say(f"    {mib(r['bytes']):>9}  {r['file']}")
    say(f"  wheelhouse: {len(rows)} wheels, {mib(size)} ({size} bytes); working tree {mib(tree)}; "
        f"limit {mib(limit)} together; prepared in {seconds:.0f} s")
    try:
        check_size(wheelhouse, limit=limit, other=tree)
    except SizeError as exc:
        say(f"gpu-check --prepare: REFUSED: {exc}")
        return 3
    say(f"  ok: carry it with the device tool's run(..., carry=[\"{_rel(wheelhouse)}\"]) and run "
        f"`bash scripts/gpu-check --wheelhouse {_rel(wheelhouse)} --out \"$OUT\"` there")
    return 0


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def read_manifest(wheelhouse: Path) -> dict[str, Any] | None:
    try:
        return json.loads((wheelhouse / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------- dry run


def dry_run(wheelhouse: Path, env_dir: Path, out: Path | None, budget: float) -> int:
    say("gpu-check --dry-run: what a run on a GPU machine would do (nothing is installed or started)")
    manifest = read_manifest(wheelhouse)
    if manifest is None:
        state = "absent" if not wheelhouse.exists() else "no MANIFEST.json"
        say(f"wheelhouse: {wheelhouse} ({state}: build it first with `scripts/gpu-check --prepare`)")
    else:
        size, tree = dir_size(wheelhouse), tree_size()
        say(f"wheelhouse: {wheelhouse}: {len(manifest['wheels'])} wheels, {mib(size)}; with the working tree "
            f"({mib(tree)}) {mib(size + tree)} of the {mib(LIMIT_BYTES)} a device run carries; prepared "
            f"{manifest['created']} for Python {manifest['python_version']} in {manifest['prepare_seconds']} s")
        if manifest.get("cumulo_sources") != _sources_hash():
            say("  note: sdk/cumulo changed since its wheel was built; the run would use the carried tree "
                "(rerun --prepare to refresh the wheel)")
    say(f"install (at most {INSTALL_LIMIT_S:.0f} s): `{sys.executable} -m venv --system-site-packages "
        f"{env_dir}/env` (the machine's torch, CuPy, numpy, pandas, pyarrow stay visible), then "
        "`pip install --no-index --no-deps` every wheel of the wheelhouse into it; without venv support, "
        f"`pip install --target {env_dir}/site` instead. The machine's own Python is never changed.")
    say(f"steps (each in its own process group with its own time limit; the whole run at most {budget:.0f} s):")
    for i, s in enumerate(STEPS, 1):
        say(f"  {i}. {s.name} (at most {s.limit_s:.0f} s): {s.what}")
    where = out if out is not None else Path("OUTDIR")
    say(f"report: {where}/report.md (Markdown) and {where}/results.json (figures), rewritten after every step; "
        f"logs under {where}/logs/")
    gpus, why = find_gpus()
    if gpus:
        say("GPUs here: " + ", ".join(f"{g['name']} ({mib(g['memory'])})" for g in gpus))
    else:
        say(f"GPUs here: none ({why}); a real run needs an NVIDIA GPU")
    return 0


# ---------------------------------------------------------------------------------- install (GPU machine)


@dataclass
class Env:
    python: str
    mode: str
    env: dict[str, str]
    cumulo_from: str


def _env_vars(work: Path, site: Path | None, use_tree: bool) -> dict[str, str]:
    paths = [str(SCRIPTS)]
    if use_tree:
        paths.insert(0, str(ROOT / "sdk"))
    if site is not None:
        paths.append(str(site))
    old = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + ([old] if old else [])),
           "CUMULO_REGISTRY": str(work / "registry.db"),
           "DASK_CUMULO__LOCAL__CERTS_DIR": str(work / "certs"),
           "PYTHONUNBUFFERED": "1", "PIP_NO_INDEX": "1"}
    return env


def _see_this_pythons_packages(venv_python: str) -> None:
    """Make the new venv see this interpreter's packages too (after its own): --system-site-packages shows
    only the base installation's, which misses them when this Python is itself a venv."""
    import site

    paths = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]
    out = subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    if out and paths:
        (Path(out) / "zz_gpu_check_base.pth").write_text("\n".join(paths) + "\n")


def install(wheelhouse: Path, env_dir: Path, log: Path, limit: float) -> tuple[Env | None, dict[str, Any]]:
    """Install the wheelhouse into ``env_dir`` without touching the machine's Python."""
    t0 = time.monotonic()
    manifest = read_manifest(wheelhouse) or {}
    wheels = sorted(str(p) for p in wheelhouse.glob("*.whl"))
    stamp_text = hashlib.sha256("\n".join(Path(w).name for w in wheels).encode()).hexdigest()
    use_tree = manifest.get("cumulo_sources") != _sources_hash()
    info: dict[str, Any] = {"wheels": len(wheels), "bytes": dir_size(wheelhouse),
                            "cumulo": "the carried working tree (changed since the wheel was built)" if use_tree
                            else "the wheel (built from this tree)"}
    if not wheels:
        info["error"] = f"no wheels in {wheelhouse}: run `scripts/gpu-check --prepare` here and carry it"
        return None, info
    work = env_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    deadline = t0 + limit
    venv_dir, site = env_dir / "env", env_dir / "site"
    stamp = env_dir / "installed"
    mode, python = None, None
    if stamp.exists() and stamp.read_text().split() [:1] == [stamp_text]:
        mode = stamp.read_text().split()[1]
        python = str(venv_dir / "bin" / "python") if mode == "venv" else sys.executable
        info["reused"] = True
    else:
        shutil.rmtree(venv_dir, ignore_errors=True)
        shutil.rmtree(site, ignore_errors=True)
        res = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv_dir)],
                             capture_output=True, text=True, timeout=max(10, deadline - time.monotonic()))
        with log.open("a") as f:
            f.write(f"$ python -m venv --system-site-packages {venv_dir}\n{res.stdout}{res.stderr}\n")
        if res.returncode == 0:
            python = str(venv_dir / "bin" / "python")
            _see_this_pythons_packages(python)
            r = _pip("install", "--no-index", "--no-deps", "--no-compile", *wheels, python=python,
                     timeout=max(10, deadline - time.monotonic()), log=log)
            if r.returncode == 0:
                mode = "venv"
            else:
                info["venv_error"] = r.stderr.strip()[-500:]
        else:
            info["venv_error"] = (res.stderr or res.stdout).strip()[-300:]
        if mode is None:
            r = _pip("install", "--no-index", "--no-deps", "--no-compile", "--target", str(site), *wheels,
                     timeout=max(10, deadline - time.monotonic()), log=log)
            if r.returncode != 0:
                info["error"] = "pip install failed (venv and --target): " + r.stderr.strip()[-800:]
                return None, info
            mode, python = "target", sys.executable
        stamp.write_text(f"{stamp_text} {mode}\n")
    assert python is not None
    env = _env_vars(work, site if mode == "target" else None, use_tree)
    check = ("import importlib, json, sys\nfrom importlib import metadata\nbad = {}\n"
             f"for m in {list(MUST_IMPORT)!r}:\n"
             "    try: importlib.import_module(m)\n"
             "    except Exception as e: bad[m] = f'{type(e).__name__}: {e}'\n"
             "v = {}\n"
             f"for d in {list(VERSIONS)!r}:\n"
             "    try: v[d] = metadata.version(d)\n"
             "    except Exception: pass\n"
             "print(json.dumps({'bad': bad, 'versions': v, 'python': sys.version.split()[0]}))\n")
    try:
        r = subprocess.run([python, "-c", check], capture_output=True, text=True, env=env,
                           timeout=max(15, deadline - time.monotonic()), cwd=str(work))
        facts = json.loads(r.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        info["error"] = f"the installed environment does not start: {exc}"
        return None, info
    info.update(mode=mode, python=python, versions=facts["versions"], python_version=facts["python"],
                seconds=round(time.monotonic() - t0, 1))
    if mode == "venv":
        pc = _pip("check", python=python, timeout=60, log=log)
        info["pip_check"] = [line for line in pc.stdout.splitlines() if line.strip()][:15]
    if facts["bad"]:
        info["error"] = "installed, but these do not import: " + "; ".join(f"{k}: {v}" for k, v in facts["bad"].items())
        return None, info
    return Env(python, mode, env, info["cumulo"]), info


# ---------------------------------------------------------------------------------- running steps


def run_step(step: Step, env: Env, out: Path, limit: float) -> dict[str, Any]:
    """Run one step in its own process group; a step that outlives ``limit`` is killed with its workers."""
    result_file = out / "steps" / f"{step.name}.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    log = out / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [env.python, str(Path(__file__).resolve()), "_step", step.name, "--result", str(result_file),
           "--out", str(out), "--limit", str(int(limit))]
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env.env, cwd=str(ROOT),
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
    seconds = time.monotonic() - t0
    try:
        res = json.loads(result_file.read_text())
    except (OSError, ValueError):
        res = None
    if timed_out:
        res = {"status": "FAIL", "summary": f"timed out after {limit:.0f} s (killed with its workers)",
               "figures": (res or {}).get("figures", {})}
    elif res is None:
        res = {"status": "FAIL", "summary": f"exited with {proc.returncode} without a result", "figures": {}}
    res["seconds"] = round(seconds, 1)
    res["name"] = step.name
    res["title"] = step.title
    if res["status"] != "PASS":
        # a step that reported its own traceback needs less of its log than one that died or hung
        res["log_tail"] = _tail(log, 12 if res.get("notes") else 40)
    return res


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # the leader is gone; its workers may not be
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def run(wheelhouse: Path, out: Path, env_dir: Path, budget: float, *, allow_no_gpu: bool = False,
        steps: tuple[str, ...] = STEP_NAMES) -> int:
    t_start = time.monotonic()
    gpus, why = find_gpus()
    if not gpus and not allow_no_gpu:
        print(f"gpu-check: no NVIDIA GPU found on this machine ({why}). This run needs one: it installs the "
              "wheelhouse and starts CUDA workers. `scripts/gpu-check --dry-run` explains what it would run; "
              "`scripts/gpu-check --prepare` builds the wheelhouse to carry to a GPU machine.", file=sys.stderr)
        return 2
    if read_manifest(wheelhouse) is None:
        print(f"gpu-check: {wheelhouse} has no {MANIFEST}: build the wheelhouse with `scripts/gpu-check --prepare` "
              "on a machine with the package index and carry it with the run.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"gpus": gpus, **driver_facts(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "platform": sys.platform},
        "wheelhouse": {"path": _rel(wheelhouse), **{k: v for k, v in (read_manifest(wheelhouse) or {}).items()
                                                    if k in ("created", "python_version", "wheels_bytes",
                                                             "prepare_seconds")}},
        "budget_s": budget,
        "steps": [],
    }
    say(f"gpu-check: {len(gpus)} GPU(s): " + ", ".join(f"{g['name']} ({mib(g['memory'])})" for g in gpus))
    env, info = install(wheelhouse, env_dir, out / "logs" / "install.log", min(INSTALL_LIMIT_S, budget / 3))
    results["install"] = info
    line = (f"install: {info.get('mode', 'failed')}, {info['wheels']} wheels, {mib(info['bytes'])}, "
            f"{info.get('seconds', '?')} s; cumulo from {info['cumulo']}")
    say(("PASS " if env else "FAIL ") + line + ("" if env else f": {info.get('error')}"))
    write_report(out, results)
    deadline = t_start + budget
    for step in STEPS:
        left = deadline - time.monotonic() - 5
        if step.name not in steps:
            res = {"name": step.name, "title": step.title, "status": "SKIP", "summary": "not run: not in --steps",
                   "figures": {}, "seconds": 0}
        elif env is None:
            res = {"name": step.name, "title": step.title, "status": "SKIP", "summary": "not run: the install failed",
                   "figures": {}, "seconds": 0}
        elif left < 15:
            res = {"name": step.name, "title": step.title, "status": "SKIP",
                   "summary": f"not run: the run's {budget:.0f} s budget is spent", "figures": {}, "seconds": 0}
        else:
            res = run_step(step, env, out, min(step.limit_s, left))
        results["steps"].append(res)
        say(f"{res['status']} {step.name}: {res['summary']} ({res['seconds']} s)")
        write_report(out, results)
    results["seconds"] = round(time.monotonic() - t_start, 1)
    write_report(out, results)
    say(f"gpu-check: report in {out / 'report.md'}, figures in {out / 'results.json'} "
        f"({results['seconds']} s in all)")
    failed = env is None or any(s["status"] == "FAIL" for s in results["steps"])
    return 1 if failed else 0


def write_report(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    m = results["machine"]
    lines = [
        "# GPU check",
        "",
        f"Run {results['started']} by `scripts/gpu-check` (see docs/gpu-check.md)"
        + (f", {results['seconds']} s in all." if "seconds" in results else " (still running or cut short)."),
        "",
        "| machine | |",
        "|---|---|",
        "| GPUs | " + ", ".join(f"{g['name']} ({g['memory'] / 2**30:.1f} GiB)" for g in m["gpus"]) + " |",
        f"| driver / CUDA | {m.get('driver', '?')} / {m.get('cuda_driver', '?')} |",
        f"| CPUs | {m['cpus']} |",
        f"| Python | {m['python']} |",
    ]
    inst = results.get("install", {})
    for k, v in sorted(inst.get("versions", {}).items()):
        lines.append(f"| {k} | {v} |")
    lines += ["", f"Install: {inst.get('mode', 'failed')} from the wheelhouse ({inst.get('wheels', '?')} wheels, "
              f"{mib(inst.get('bytes', 0))}) in {inst.get('seconds', '?')} s; cumulo from {inst.get('cumulo', '?')}."]
    if inst.get("error"):
        lines += ["", f"**Install failed:** {inst['error']}"]
    if inst.get("pip_check"):
        lines += ["", "`pip check` (the machine's packages next to the carried ones):", "", "```",
                  *inst["pip_check"], "```"]
    lines += ["", "| # | step | result | seconds | summary |", "|---|---|---|---|---|"]
    for i, s in enumerate(results["steps"], 1):
        lines.append(f"| {i} | {s['name']} | {s['status']} | {s['seconds']} | {s['summary']} |")
    for s in results["steps"]:
        lines += ["", f"## {s['name']}: {s['title']}", "", f"**{s['status']}** {s['summary']}"]
        if s.get("figures"):
            lines.append("")
            for k, v in s["figures"].items():
                if isinstance(v, list) and v and len(str(v)) > 100:
                    lines += [f"- {k}:"] + [f"  - {item}" for item in v]
                else:
                    lines.append(f"- {k}: {v}")
        for note in s.get("notes", []):
            lines += ["", note]
        if s.get("log_tail"):
            lines += ["", "Last lines of its log:", "", "```", s["log_tail"], "```"]
    not_tested = [s for s in results["steps"] if s["status"] == "SKIP"]
    if any("cudf" in json.dumps(s.get("figures", {})).lower() for s in results["steps"]) or not_tested:
        lines += ["", "## Not tested", ""]
        for s in results["steps"]:
            cudf = s.get("figures", {}).get("cuDF")
            if cudf:
                lines.append(f"- cuDF ({s['name']}): {cudf}")
        lines += [f"- step {s['name']}: {s['summary']}" for s in not_tested]
    (out / "report.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------- the steps (GPU machine)


def _result(status: str, summary: str, figures: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    return {"status": status, "summary": summary, "figures": figures, "notes": notes or []}


def step_connect(out: Path, limit: float) -> dict[str, Any]:
    import dask
    import dask.dataframe as dd
    from distributed.diagnostics import nvml

    import cumulo

    cudf = importlib.util.find_spec("cudf") is not None
    expected = "cudf" if cudf else "pandas"
    t0 = time.perf_counter()
    with cumulo.connect() as cluster:
        t_connect = time.perf_counter() - t0
        info = cluster.info()
        kind = type(getattr(cluster._deployment, "manager", None)).__name__
        facts = cluster.facts
        gpus = [g for w in facts.workers.values() for g in w["gpus"]] if facts else []
        visible = sorted(str(v) for v in cluster.client.run(os.getenv, "CUDA_VISIBLE_DEVICES").values())
        backend, configured = cluster.backend, dask.config.get("dataframe.backend")
        df = dd.from_dict({"k": [i % 7 for i in range(7000)], "x": list(range(7000))}, npartitions=4)
        sums = df.groupby("k").x.sum().compute()
        frame = type(sums).__module__.split(".")[0]
        ok_sum = int(sums.sum()) == sum(range(7000))
    n = int(nvml.device_get_count())
    figures = {
        "cluster": kind, "workers": info["workers"], "GPUs (NVML)": n, "GPUs (workers)": info["gpus"],
        "GPU model": info["gpu_model"],
        "GPU memory": ", ".join(f"{g['memory'] / 2**30:.1f} GiB" for g in gpus),
        "CUDA_VISIBLE_DEVICES per worker": visible,
        "backend": backend, "dataframe.backend while connected": configured,
        "group-by result frame": frame, "address": info["address"].split("://")[0] + "://...",
        "connect seconds": round(t_connect, 1),
        "cuDF": "importable: tested as the backend" if cudf else "not installed on this machine: not tested; "
                                                                 "the dataframe step ran on pandas",
    }
    problems = []
    if kind != "LocalCUDACluster":
        problems.append(f"cluster is {kind}, not LocalCUDACluster")
    if not (info["workers"] == info["gpus"] == n):
        problems.append(f"workers {info['workers']}, GPUs seen by workers {info['gpus']}, NVML {n}: not one per GPU")
    if backend != expected or configured != expected:
        problems.append(f"backend {backend} (dask.config {configured}), expected {expected}")
    if not ok_sum:
        problems.append("the group-by sum is wrong")
    summary = (f"{kind}, {info['workers']} worker(s) for {n} GPU(s): {info['gpu_model']} "
               f"({figures['GPU memory']}); backend {backend}"
               + ("" if cudf else " (cuDF not installed: not tested)") + f"; connect {t_connect:.1f} s")
    return _result("FAIL" if problems else "PASS", ("; ".join(problems) + " | " if problems else "") + summary,
                   figures)


def _warm_gpu() -> dict[str, Any]:
    """A dask task: import the array library, run one matmul (so the load starts at once later)."""
    try:
        import cupy as xp  # type: ignore[import-not-found]

        a = xp.ones((1024, 1024), dtype=xp.float32)
        float((a @ a).sum())
        return {"lib": "cupy " + xp.__version__}
    except ImportError:
        import torch

        a = torch.ones(1024, 1024, device="cuda")
        float((a @ a).sum())
        return {"lib": "torch " + torch.__version__}


def _start_load(seconds: float, dask_worker: Any = None) -> bool:
    """Run on the worker with client.run (not a task): a matmul loop in a thread for ``seconds``."""
    import threading

    state: dict[str, Any] = {"iterations": 0, "error": None, "seconds": 0.0, "n": 8192}
    done = threading.Event()

    def loop() -> None:
        n = state["n"]
        try:
            try:
                import cupy as xp  # type: ignore[import-not-found]

                a = xp.random.random((n, n), dtype=xp.float32)
                sync = xp.cuda.runtime.deviceSynchronize
            except ImportError:
                import torch

                a = torch.rand(n, n, device="cuda")
                sync = torch.cuda.synchronize
            t0 = time.time()
            while time.time() - t0 < seconds:
                for _ in range(5):
                    b = a @ a
                sync()
                state["iterations"] += 5
            del b
            state["seconds"] = time.time() - t0
        except BaseException as exc:  # reported back by _load_stats
            state["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            done.set()

    threading.Thread(target=loop, name="gpu-check-load", daemon=True).start()
    dask_worker._gpu_check_load = (state, done)
    return True


def _load_stats(timeout: float, dask_worker: Any = None) -> dict[str, Any]:
    state, done = dask_worker._gpu_check_load
    done.wait(timeout)
    return dict(state, finished=done.is_set())


def _power_sampler(stop: Any, samples: list[tuple[float, float]]) -> None:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        while not stop.is_set():
            samples.append((time.time(), sum(pynvml.nvmlDeviceGetPowerUsage(h) for h in handles) / 1000.0))
            stop.wait(0.5)
        pynvml.nvmlShutdown()
    except Exception:
        return


def step_ledger(out: Path, limit: float) -> dict[str, Any]:
    import threading

    import dask

    import cumulo

    load_s, idle_s, threshold = 20.0, 8.0, 10.0
    cfg = {"cumulo.guards.interval": "1s", "cumulo.guards.watch-interval": "1s", "cumulo.cost.sample-interval": "0.5s",
           "cumulo.guards.idle-gpu-threshold": threshold}
    power: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_power_sampler, args=(stop, power), daemon=True)
    figures: dict[str, Any] = {"load seconds": load_s, "idle_timeout": f"{idle_s:g} s",
                               "idle-gpu-threshold": f"{threshold:g} %"}
    with dask.config.set(cfg):
        cluster = cumulo.connect(idle_timeout=idle_s)
        try:
            client = cluster.client
            figures["array library"] = client.submit(_warm_gpu, pure=False).result(timeout=60)["lib"]
            sampler.start()
            t_idle0 = time.time()
            client.run(_start_load, load_s)
            t_load0 = time.time()
            fired_during = None
            during: list[dict[str, Any]] = []
            ledger_power: list[Any] = []
            while time.time() < t_load0 + load_s:
                if cluster.status != "running" or cluster.watchdog.tripped is not None:
                    fired_during = time.time() - t_load0
                    break
                time.sleep(0.5)
            if fired_during is None:
                ledger = cluster.usage.ledger(samples=200) or {}
                during = [s for s in ledger.get("samples", []) if s["time"] >= t_load0]
                figures["ledger nvml"] = ledger.get("nvml")
                ledger_power = [w.get("power_w") for w in ledger.get("workers", []) if "power_w" in w]
                figures["idle seconds at the end of the load (ledger)"] = round(ledger.get("idle_seconds", -1), 1)
            stats = list(client.run(_load_stats, 30).values())[0] if fired_during is None else {}
            t_end = time.time()
            fired_after = None
            while cluster.status == "running" and time.time() < t_end + idle_s + 25:
                time.sleep(0.25)
            if cluster.status != "running" and fired_during is None:
                fired_after = time.time() - t_end
            stop.set()
            events = [(k, m) for _, k, m in cluster.registry.events(cluster.id)]
            final = cluster.usage.ledger()
        finally:
            stop.set()
            if cluster.status == "running":
                cluster.close()
    utils = [s["gpu_util"] for s in during if s.get("gpu_util") is not None]
    if stats:
        flops = 2 * stats["n"] ** 3 * stats["iterations"]
        figures["load"] = (f"{stats['iterations']} matmuls {stats['n']}x{stats['n']} float32 in {stats['seconds']:.1f} s"
                           f" = {flops / max(stats['seconds'], 1e-9) / 1e12:.1f} TFLOP/s"
                           + (f"; error {stats['error']}" if stats.get("error") else ""))
    figures["ledger GPU utilisation during the load (%)"] = (
        f"max {max(utils):.0f}, mean {sum(utils) / len(utils):.0f} over {len(utils)} samples" if utils else "none")
    totals = (final or {}).get("totals", {})
    if totals:
        figures["gpu_util_seconds (ledger, whole run)"] = (None if totals.get("gpu_util_seconds") is None
                                                           else round(totals["gpu_util_seconds"], 1))
        figures["gpu_seconds (ledger, whole run)"] = round(totals.get("gpu_seconds", 0), 1)
    load_w = [w for t, w in power if t_load0 + 2 <= t <= t_load0 + load_s]
    idle_w = [w for t, w in power if t >= t_end + 3]
    figures["power draw (NVML, sampled by the check itself)"] = (
        f"load {sum(load_w) / len(load_w):.0f} W (max {max(load_w):.0f}), after {sum(idle_w) / len(idle_w):.0f} W"
        if load_w and idle_w else "not available")
    energy_kept = "energy_j" in totals or ledger_power
    if energy_kept:
        figures["ledger power draw under load (W, per worker)"] = ledger_power
        figures["ledger energy (J, whole run)"] = totals.get("energy_j")
    else:
        figures["ledger energy metering"] = "absent in this cumulo: not tested"
    figures["guard during the load"] = "fired" if fired_during is not None else "did not fire"
    figures["guard after the load"] = (f"closed the cluster {fired_after:.1f} s after the load ended"
                                       if fired_after is not None else
                                       "not reached (it fired during the load)" if fired_during is not None
                                       else "did not fire")
    idle_events = [m for k, m in events if k == "idle"]
    if idle_events:
        figures["idle reason"] = idle_events[-1]
    figures["seconds from connect to the load start"] = round(t_load0 - t_idle0, 1)
    problems = []
    if fired_during is not None:
        problems.append(f"the idle guard fired {fired_during:.1f} s into the load")
    if not utils or max(utils) < threshold:
        problems.append("the ledger saw no GPU utilisation above the threshold during the load")
    if stats.get("error"):
        problems.append(f"the load failed: {stats['error']}")
    if energy_kept and power and (not any(w for w in ledger_power) or not totals.get("energy_j")):
        problems.append("NVML reports power draw but the ledger recorded no power or energy")
    if fired_after is None and fired_during is None:
        problems.append(f"the idle guard did not close the cluster within {idle_s + 25:.0f} s after the load")
    elif fired_after is not None and fired_after < idle_s - 2.5:
        problems.append(f"the idle guard fired {fired_after:.1f} s after the load, before idle_timeout {idle_s:g} s")
    summary = (f"util max {max(utils):.0f}% under load" if utils else "no util samples") + \
        f"; guard {'held' if fired_during is None else 'FIRED'} during the load, " + \
        (f"fired {fired_after:.1f} s after it" if fired_after is not None else
         "so not checked after it" if fired_during is not None else "did not fire after it")
    return _result("FAIL" if problems else "PASS", ("; ".join(problems) + " | " if problems else "") + summary,
                   figures)


def _ddp_steps(steps: int = 20) -> dict[str, Any]:
    """One rank of cumulo.train.torch: a small MLP, DDP, SGD on synthetic regression data."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import cumulo.train

    ctx = cumulo.train.context()
    dev = torch.device(ctx.device)
    torch.manual_seed(ctx.rank)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).to(dev)
    ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    x = torch.randn(4096, 32, device=dev)
    y = x @ torch.randn(32, 1, device=dev)
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    torch.cuda.synchronize(dev) if dev.type == "cuda" else None
    seconds = time.perf_counter() - t0
    ones = torch.ones(2, device=dev)
    dist.all_reduce(ones)
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if dev.type == "cuda" else None
    return {"backend": str(dist.get_backend()), "world": dist.get_world_size(), "rank": ctx.rank, "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "loss_first": losses[0],
            "loss_last": losses[-1], "steps": steps, "seconds": seconds, "all_reduce": ones.tolist(),
            "torch": torch.__version__, "nccl": nccl}


def step_train(out: Path, limit: float) -> dict[str, Any]:
    import cumulo
    import cumulo.train

    with cumulo.connect() as cluster:
        gpus = cluster.info()["gpus"]
        t0 = time.perf_counter()
        ranks = cumulo.train.torch(_ddp_steps, cluster, timeout="90s")
        seconds = time.perf_counter() - t0
    r0 = ranks[0]
    figures = {"ranks": len(ranks), "GPUs": gpus, "backend": r0["backend"], "device": r0["device"], "GPU": r0["gpu"],
               "torch": r0["torch"], "NCCL": r0["nccl"], "DDP steps": r0["steps"],
               "loss": f"{r0['loss_first']:.4f} -> {r0['loss_last']:.4f}",
               "step time": f"{r0['seconds'] / r0['steps'] * 1000:.1f} ms", "all_reduce of ones": r0["all_reduce"],
               "train.torch seconds (rendezvous included)": round(seconds, 1)}
    problems = []
    if r0["backend"] != "nccl":
        problems.append(f"backend {r0['backend']}, not nccl")
    if len(ranks) != gpus or r0["world"] != gpus:
        problems.append(f"{len(ranks)} ranks (world {r0['world']}) for {gpus} GPUs")
    if not all(r["loss_last"] < r["loss_first"] for r in ranks):
        problems.append("the loss did not fall")
    if r0["all_reduce"] != [float(gpus)] * 2:
        problems.append(f"all_reduce of ones gave {r0['all_reduce']}")
    summary = (f"{r0['backend']}, world size {r0['world']} on {r0['gpu']}; loss {r0['loss_first']:.3f} -> "
               f"{r0['loss_last']:.3f} in {r0['steps']} DDP steps; torch {r0['torch']}, NCCL {r0['nccl']}")
    return _result("FAIL" if problems else "PASS", ("; ".join(problems) + " | " if problems else "") + summary,
                   figures)


def _uses_gpu_marker(source: str) -> bool:
    """Whether the code (not a string or comment in it) applies ``pytest.mark.gpu``."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "mark.gpu" in source  # pytest will report the file; let it be collected
    return any(isinstance(node, ast.Attribute) and node.attr == "gpu" and isinstance(node.value, ast.Attribute)
               and node.value.attr == "mark" for node in ast.walk(tree))


def gpu_test_files(root: Path = ROOT) -> list[str]:
    """Test files that carry the ``gpu`` marker."""
    return sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")
                  if _uses_gpu_marker(p.read_text(errors="replace")))


def parse_junit(path: Path) -> list[dict[str, str]]:
    """(test id, outcome, message) for every case of a JUnit XML file pytest wrote."""
    import xml.etree.ElementTree as ET

    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or el.text or "").strip().splitlines()[0][:300] if (
                    el.get("message") or el.text) else ""
                break
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        rows.append({"test": test_id, "outcome": outcome, "message": message})
    return rows


def step_tests(out: Path, limit: float) -> dict[str, Any]:
    files = gpu_test_files()
    junit = out / "pytest-gpu.xml"
    log = out / "logs" / "pytest-gpu.log"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "gpu_check", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", "-rA", "--timeout", "120", f"--junitxml={junit}", *files]
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, cwd=str(ROOT), stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(20, limit - 15)).returncode
        except subprocess.TimeoutExpired:
            rc = None
    rows = parse_junit(junit) if junit.exists() else []
    count = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "error", "skipped")}
    absent = [r for r in rows if r["outcome"] == "error" and re.search(r"(ModuleNotFound|Import)Error", r["message"])]
    bad = [r for r in rows if r["outcome"] in ("failed", "error") and r not in absent]
    figures = {"files": files, **count, "pytest exit": rc,
               "results": [f"{r['outcome']}: {r['test']}" + (f" ({r['message']})" if r["message"] else "")
                           for r in rows]}
    if absent:
        figures["not collectable here"] = [f"{r['test']}: {r['message']}" for r in absent]
    notes = [f"Full output: logs/pytest-gpu.log; JUnit XML: pytest-gpu.xml. Command: `{' '.join(cmd[1:])}`"]
    summary = (f"{count['passed']} passed, {count['failed']} failed, {count['error'] - len(absent)} errors, "
               f"{count['skipped']} skipped" + (f", {len(absent)} files not collectable here" if absent else ""))
    if rc is None:
        return _result("FAIL", f"pytest ran past {limit - 15:.0f} s; " + summary, figures, notes)
    if not rows:
        return _result("FAIL", f"pytest wrote no results (exit {rc})", figures, notes)
    return _result("FAIL" if bad or count["passed"] == 0 else "PASS", summary, figures, notes)


def _sum_sq_and_std(x: Any) -> tuple[float, float, str]:
    import dask

    total, std = dask.compute((x * x).sum(), x.std())
    return float(total), float(std), type(total).__module__.split(".")[0]


def step_bench(out: Path, limit: float) -> dict[str, Any]:
    import cupy  # type: ignore[import-not-found]
    import dask
    import dask.array as da
    from distributed import wait

    import cumulo

    n, chunk, repeats = 16384, 4096, 3
    cpus = os.cpu_count() or 1
    with cumulo.connect() as cluster:
        gpu_workers = cluster.info()["workers"]
        rs = da.random.RandomState(RandomState=cupy.random.RandomState)
        xg = rs.random_sample((n, n), chunks=(chunk, chunk)).persist()
        wait(xg)
        gpu_times, gpu_vals = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            gpu_vals = _sum_sq_and_std(xg)
            gpu_times.append(time.perf_counter() - t0)
        del xg
    with dask.config.set(scheduler="threads", num_workers=cpus):
        xc = da.random.random((n, n), chunks=(chunk, chunk)).persist()
        cpu_times, cpu_vals = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            cpu_vals = _sum_sq_and_std(xc)
            cpu_times.append(time.perf_counter() - t0)
        del xc
    g, c = min(gpu_times), min(cpu_times)
    kind = gpu_vals[2]
    mean_sq = [v[0] / n / n for v in (gpu_vals, cpu_vals)]
    figures = {"array": f"{n}x{n} float64 ({n * n * 8 / 2**30:.0f} GiB), chunks {chunk}x{chunk}, persisted first",
               "GPU result type": kind, f"GPU ({gpu_workers} dask-cuda worker(s), one per GPU), best of 3": f"{g:.3f} s",
               f"CPU (NumPy, threaded scheduler, {cpus} threads), best of 3": f"{c:.3f} s",
               "ratio CPU/GPU": round(c / g, 1), "mean of x^2 (GPU, CPU; 1/3 expected)":
               [round(v, 5) for v in mean_sq], "std (GPU, CPU; 0.2887 expected)":
               [round(gpu_vals[1], 5), round(cpu_vals[1], 5)]}
    problems = []
    if kind != "cupy":
        problems.append(f"the GPU reduction returned a {kind} value, not cupy: it did not run on CuPy chunks")
    if any(abs(v - 1 / 3) > 1e-3 for v in mean_sq) or any(abs(v - 0.288675) > 1e-3 for v in
                                                         (gpu_vals[1], cpu_vals[1])):
        problems.append("the results disagree with the uniform distribution's moments")
    summary = f"sum(x*x) and std of 2 GiB: GPU {g:.3f} s, CPU ({cpus} cores) {c:.3f} s, ratio {c / g:.1f}x"
    return _result("FAIL" if problems else "PASS", ("; ".join(problems) + " | " if problems else "") + summary,
                   figures, ["The GPU time includes the distributed scheduler's round trip; the CPU side runs in "
                             "this process on dask's threaded scheduler."])


STEP_FUNCTIONS = {"connect": step_connect, "ledger": step_ledger, "train": step_train, "tests": step_tests,
                  "bench": step_bench}


def _child(name: str, result: Path, out: Path, limit: float) -> int:
    try:
        res = STEP_FUNCTIONS[name](out, limit)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the step's result
        res = _result("FAIL", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
                      {}, ["```\n" + traceback.format_exc()[-3000:] + "```"])
        traceback.print_exc()
    result.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


# ---------------------------------------------------------------------------------- pytest plugin (step 4)

#: Markers that name what a gpu test needs beyond the GPU and dask-cuda, with the modules that must import for
#: it: where one does not import here, the test is skipped with that reason, instead of failing for a missing
#: package. Selected by marker, never by what the test's source mentions (a test may name cuDF without needing
#: it, as the check that the default cluster gets one CUDA worker per GPU does).
MARKER_NEEDS = {"cudf": ("cudf", "dask_cudf")}


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    import pytest

    for item in items:
        missing = [m for marker, modules in MARKER_NEEDS.items() if item.get_closest_marker(marker) is not None
                   for m in modules if not _importable(m)]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)}, not installed on this machine: "
                                                    "not tested"))


# ---------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_step"]:
        p = argparse.ArgumentParser(prog="gpu-check _step")
        p.add_argument("name", choices=STEP_NAMES)
        p.add_argument("--result", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--limit", type=float, default=60)
        a = p.parse_args(argv[1:])
        return _child(a.name, a.result, a.out, a.limit)
    p = argparse.ArgumentParser(
        prog="gpu-check",
        description="Prove cumulo's GPU path on a real NVIDIA machine: --prepare a wheelhouse here, run it there.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", help="build the wheelhouse (needs the package index)")
    mode.add_argument("--dry-run", action="store_true", help="say what a run would do, and exit 0")
    p.add_argument("--wheelhouse", type=Path, default=DEFAULT_WHEELHOUSE,
                   help=f"the wheelhouse directory (default {_rel(DEFAULT_WHEELHOUSE)}, git-ignored)")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="where the run writes report.md, results.json and logs (default $OUT)")
    p.add_argument("--env", type=Path, default=Path(tempfile.gettempdir()) / "cumulo-gpu-check",
                   help="where the run installs the wheelhouse (default: a folder under the temp dir)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole run (default 420)")
    p.add_argument("--python-version", default=TARGET_PYTHON, help="--prepare: the target Python (default 3.12)")
    p.add_argument("--with", dest="extra", action="append", default=[], metavar="REQ",
                   help="--prepare: also carry this requirement (repeatable)")
    p.add_argument("--newest", action="store_true",
                   help="--prepare: newest versions matching the pins, not this environment's")
    p.add_argument("--steps", default=",".join(STEP_NAMES),
                   help=f"the steps to run, comma-separated (default all: {','.join(STEP_NAMES)})")
    p.add_argument("--allow-no-gpu", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    steps = tuple(x.strip() for x in a.steps.split(",") if x.strip())
    unknown = [x for x in steps if x not in STEP_NAMES]
    if unknown:
        p.error(f"unknown step(s) {unknown}: choose from {', '.join(STEP_NAMES)}")
    if a.prepare:
        try:
            return prepare(a.wheelhouse, python_version=a.python_version, extra=tuple(a.extra),
                           match_local=not a.newest)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"gpu-check --prepare: failed: {exc}", file=sys.stderr)
            return 1
    if a.dry_run:
        return dry_run(a.wheelhouse.resolve(), a.env, a.out, a.budget)
    if a.out is None and (find_gpus()[0] or a.allow_no_gpu):
        p.error("--out OUTDIR is required (or set $OUT)")
    return run(a.wheelhouse.resolve(), (a.out or Path("gpu-check-out")).resolve(), a.env, a.budget,
               allow_no_gpu=a.allow_no_gpu, steps=steps)


if __name__ == "__main__":
    sys.exit(main())
