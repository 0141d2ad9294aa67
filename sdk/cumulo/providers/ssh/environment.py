"""Building the notebook's environment on SSH hosts (cumulo.envsync's lock, shipped over the SSH connection).

Each host keeps one venv per lock digest under ``~/<cumulo.ssh.env-root>/``,
built with uv from the host's own index configuration plus the local wheels
this client sent; a second connect with the same lock reuses it. A host with
no uv of its own gets a copy of this client's uv binary when both run the
same platform.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

from dask.utils import parse_timedelta

from ... import config, envsync
from ...exceptions import EnvironmentSyncError, ProviderError
from .remote import HostFacts
from .session import Session

__all__ = ["install", "venv_path"]


def venv_path(session: Session, lock: envsync.Lock) -> str:
    """Where the venv of ``lock`` lives on the session's host."""
    root = str(config.get("ssh.env-root")).strip("/")
    return f"{session.home}/{root}/{lock.digest}"


async def _uv_on_host(session: Session, facts: HostFacts) -> str:
    if facts.uv:
        return facts.uv
    binary = envsync.uv_binary()
    if binary is None or facts.platform != envsync.client_platform():
        raise EnvironmentSyncError(
            f"{session.host.label} has no uv and this client cannot send one (host {facts.platform}, client "
            f"{envsync.client_platform()}): install uv there (pipx install uv) and reconnect")
    folder = f"{session.home}/.cache/cumulo/bin"
    target = f"{folder}/uv"
    # a copy of another uv build differs in size; equal sizes are taken as the same binary
    size = await session.run(f"stat -c %s {shlex.quote(target)} 2>/dev/null", check=False)
    if size.strip() != str(binary.stat().st_size):
        await session.put([binary], folder, mode=0o700)
    return target


async def install(session: Session, facts: HostFacts, lock: envsync.Lock, wheels: list[Path], *,
                  staging: Path) -> tuple[str, str, float]:
    """Make the lock's venv on the host; (venv python, 'built' or 'reused', seconds).

    EnvironmentSyncError naming the package and host when the install fails."""
    started = time.monotonic()
    if facts.python[:2] != tuple(int(x) for x in lock.python.split(".")):
        raise EnvironmentSyncError(
            f"{session.host.label} runs Python {'.'.join(map(str, facts.python[:2]))} but this notebook runs "
            f"{lock.python}; pickled code and data need the same minor version: set cumulo.ssh.python to a "
            f"python{lock.python} on the host")
    if not facts.tools:
        raise EnvironmentSyncError(f"{session.host.label} lacks flock/setsid (util-linux): install util-linux there")
    venv = venv_path(session, lock)
    q = shlex.quote
    state = await session.run(f"test -f {q(venv + '/.cumulo-ready')} && cat {q(venv + '/.cumulo-local')}",
                              check=False)
    if state.strip() == lock.local_digest:  # nothing to send
        return f"{venv}/bin/python", "reused", time.monotonic() - started
    uv = await _uv_on_host(session, facts)
    wheels_dir = f"{venv}.wheels"
    req = staging / "requirements.txt"
    req.write_text(lock.requirements_text())
    await session.put([req, *wheels], wheels_dir)
    timeout = float(parse_timedelta(config.get("ssh.install-timeout")))
    script = envsync.install_script(lock, venv=venv, python=facts.executable, uv=uv, wheels_dir=wheels_dir,
                                    timeout_s=timeout)
    try:
        out = await session.run(script, timeout=timeout + 30, what="installing the notebook's environment")
    except ProviderError as exc:
        text = envsync.without_credentials(str(exc))
        index = envsync.unreachable_index(text)
        if index is not None:  # the URL names a package, but no package was refused: the index did not answer
            raise EnvironmentSyncError(
                f"{session.host.label} could not reach the package index {index} (nothing was started there):\n"
                f"{text}\nCheck the host's network and its index setting (its uv config), or add a wheel folder "
                "with cumulo.env.find-links") from None
        package = envsync.named_package(text)
        named = f"package {package!r} " if package else "the environment "
        raise EnvironmentSyncError(
            f"{named}could not be installed on {session.host.label} (nothing was started there):\n{text}\n"
            "Fix or drop the package (cumulo.env.exclude, or env=[...] with what the workers need), give the "
            "host an index that has it (its uv config), or add a wheel folder with cumulo.env.find-links") from None
    finally:
        await session.run(f"rm -rf {shlex.quote(wheels_dir)}", check=False)
    how = next((w for w in ("reused", "updated", "built") if f"cumulo-env-{w}" in out), "built")
    return f"{venv}/bin/python", how, time.monotonic() - started


async def install_all(sessions: list[Session], facts: list[HostFacts], lock: envsync.Lock, wheels: list[Path], *,
                      staging: Path) -> list[tuple[str, str, float]]:
    """``install`` on every host at once (each host builds its own venv)."""
    return list(await asyncio.gather(*(install(s, f, lock, wheels, staging=staging)
                                       for s, f in zip(sessions, facts))))
