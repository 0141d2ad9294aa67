"""Local and editable packages as wheels: built on the client, shipped over the cluster's own channel."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ..exceptions import EnvironmentSyncError
from . import _wheels
from .lock import Local, Lock
from .shipcheck import refuse_secrets, shippable_tree

__all__ = ["build_wheels", "client_platform", "ship_wheels", "uv_binary", "uv_path"]


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


def _build_env(dist: Local, tree: Path, src: Path) -> dict[str, str] | None:
    """A copy has no .git: a version the build would read from git is the one installed here."""
    if tree == src:
        return None
    upper = re.sub(r"[^A-Za-z0-9]+", "_", dist.name).upper()
    return {**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION": dist.version,
            f"SETUPTOOLS_SCM_PRETEND_VERSION_FOR_{upper}": dist.version, "PDM_BUILD_SCM_VERSION": dist.version}


def build_wheels(lock: Lock, out: Path) -> list[Path]:
    """Build every local distribution of ``lock`` into a wheel under ``out`` (uv build, else pip wheel).

    Inside a git work tree a package is built from a copy without what git ignores, and every
    wheel is scanned for secrets before anything is sent (:mod:`.shipcheck`)."""
    out.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    named: list[tuple[str, Path]] = []
    for dist in lock.local:
        src = Path(dist.source)
        if src.is_file() and src.suffix == ".whl":
            wheels.append(src)
            named.append((dist.name, src))
        elif src.is_dir():
            before = set(out.glob("*.whl"))
            with tempfile.TemporaryDirectory(prefix="cumulo-src-") as tmp:
                tree = shippable_tree(src, Path(tmp) / src.name, name=dist.name)
                cmd = ([uv_path(), "build", "--wheel", "--out-dir", str(out), str(tree)] if uv_path()
                       else [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(tree)])
                done = subprocess.run(cmd, capture_output=True, text=True, env=_build_env(dist, tree, src))
            made = sorted(set(out.glob("*.whl")) - before)
            if done.returncode != 0 or not made:
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                raise EnvironmentSyncError(
                    f"could not build local package {dist.name} from {src} into a wheel for the workers:\n  "
                    + "\n  ".join(tail) + "\nFix its build, or install it from an index and reconnect")
            wheels.extend(made)
            named += [(dist.name, w) for w in made]
        else:
            raise EnvironmentSyncError(
                f"local package {dist.name} was installed from {src}, which no longer exists; reinstall it "
                "(pip install -e PATH) or leave it out with cumulo.env.exclude")
    refuse_secrets(named)
    lock.wheel_digests = {w.name: _wheel_digest(w) for w in wheels}
    return wheels


def uv_path() -> str | None:
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
    found = uv_path()
    return Path(found) if found else None


def client_platform() -> str:
    """'Linux-x86_64' style, compared with a host's `uname -sm` before shipping binaries."""
    return f"{platform.system()}-{platform.machine()}"


async def ship_wheels(client: Any, wheels: dict[str, bytes], digest: str) -> None:
    """Install local wheels on every worker, now and on each that joins later (worker plugin by value)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(_wheels)
    await client.register_plugin(_wheels.InstallWheels(wheels, digest))
