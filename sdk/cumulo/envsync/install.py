"""The shell a host runs to build (or reuse) the venv of a lock: transport-neutral, SSH runs it today."""

from __future__ import annotations

import shlex
from pathlib import Path

from .lock import Lock

__all__ = ["install_script"]


def install_script(lock: Lock, *, venv: str, python: str, uv: str, wheels_dir: str, timeout_s: float) -> str:
    """Shell that makes the lock's venv at ``venv`` on a host and prints what it did.

    A venv with ``.cumulo-ready`` is reused ('cumulo-env-reused'); when only the
    local code changed its wheels are reinstalled ('cumulo-env-updated'); a
    half-built venv (an interrupted install) is removed and rebuilt
    ('cumulo-env-built'). A build that fails (or is stopped by a signal) removes
    its half-built venv on the way out, so nothing is left that looks usable.
    Everything is written under umask 077 (and made private after uv, which sets
    some modes itself) in a folder only the user can enter: the venv holds the
    notebook's local code. Runs under flock, so two connects
    to one host do not build the same venv at once."""
    q = shlex.quote
    links = " ".join(f"--find-links {q(f)}" for f in lock.find_links)
    wheels = " ".join(q(f"{wheels_dir}/{name}") for name in sorted(lock.wheel_digests))
    py, marker = q(venv + "/bin/python"), q(venv + "/.cumulo-local")
    update = (f"{q(uv)} pip install -q -p {py} --no-deps --reinstall {wheels}" if wheels else "true")
    root = q(str(Path(venv).parent))
    return f"""set -e
umask 077
mkdir -p {root}
chmod 700 {root}
exec 9>{q(venv + '.lock')}
flock -w {int(timeout_s)} 9
if [ -f {q(venv + '/.cumulo-ready')} ]; then
  if [ "$(cat {marker} 2>/dev/null)" = {q(lock.local_digest)} ]; then echo cumulo-env-reused; exit 0; fi
  {update}
  printf %s {q(lock.local_digest)} > {marker}
  echo cumulo-env-updated; exit 0
fi
half_built={q(venv)}
rm -rf "$half_built"
trap 'rm -rf "$half_built"' EXIT
trap 'exit 129' HUP INT TERM
{q(uv)} venv -q -p {q(python)} {q(venv)}
{q(uv)} pip install -q -p {py} {links} -r {q(wheels_dir + '/requirements.txt')} {wheels}
printf %s {q(lock.local_digest)} > {marker}
chmod -R go-rwx "$half_built"
touch {q(venv + '/.cumulo-ready')}
trap - EXIT HUP INT TERM
echo cumulo-env-built
"""
