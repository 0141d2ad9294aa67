"""The venvs cumulo builds on an ssh:// host: private to the user, and never left half-built.

Against the real OpenSSH server of test_ssh (its fixtures, a throw-away user on loopback). The
host's env folder is read directly: the test runs as root on the same machine.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import cumulo
from cumulo.exceptions import EnvironmentSyncError

from . import sshd
from .test_ssh import server, ssh  # noqa: F401  (fixtures: one sshd and user for this module)

pytestmark = [pytest.mark.skipif(sshd.why_unavailable() is not None, reason=str(sshd.why_unavailable())),
              pytest.mark.timeout(600)]


def _half_built(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".wheels")
            and not (p / ".cumulo-ready").exists()] if root.exists() else []


def test_a_failed_build_leaves_nothing_and_a_built_venv_is_private(ssh: sshd.SSHServer) -> None:  # noqa: F811
    root = ssh.home / ".cache" / "cumulo" / "envs"
    with pytest.raises(EnvironmentSyncError, match="cumulo-no-such-package-zz"):
        cumulo.connect(ssh.target, name="nopkg", environment=["cumulo-no-such-package-zz==1.0"])
    assert root.exists() and _half_built(root) == [], "a failed build left a half-built venv on the host"
    assert not list(root.glob("*.wheels")), "the shipped wheels stay behind"

    with cumulo.connect(ssh.target, name="private", workers=1, threads_per_worker=1) as cluster:
        pythons = set(cluster.client.run(lambda: __import__("sys").executable).values())
    venv = Path(pythons.pop()).parent.parent
    assert venv.parent == root and (venv / ".cumulo-ready").exists()
    # only the user can enter the folder; what the build wrote is private too (the bytecode the
    # cluster's processes wrote afterwards, under their own umask, lies inside that folder)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE(venv.stat().st_mode) == 0o700
    shared = [p for p in venv.rglob("*") if not p.is_symlink() and "__pycache__" not in p.parts
              and p.stat().st_mode & 0o077]
    assert not shared, f"readable by other users of the host: {shared[:5]}"
