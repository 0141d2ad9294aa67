"""What cumulo runs on an SSH host: probing it, starting detached Dask processes, stopping them for sure.

Every process of a cluster on a host lives in one folder,
``~/.cache/cumulo/clusters/<cluster id>/`` (mode 700): its TLS files, a
``NAME.pid`` per process (each started with setsid, so the pid is its process
group) and a ``NAME.log``. Stopping a cluster on a host needs only that folder:
terminate every group, wait, kill what is left, confirm none remains, then
remove the folder (and the keys in it).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ...exceptions import ProviderError
from .session import Session

__all__ = ["HostFacts", "cluster_dir", "probe", "start_detached", "stop_all"]

_PROBE = r"""
import json, platform, shutil, subprocess, sys
gpus = 0
if shutil.which("nvidia-smi"):
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        gpus = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    except Exception:
        pass
print(json.dumps({"python": list(sys.version_info[:3]), "executable": sys.executable,
                  "platform": platform.system() + "-" + platform.machine(), "gpus": gpus,
                  "uv": shutil.which("uv"), "flock": bool(shutil.which("flock")), "setsid": bool(shutil.which("setsid"))}))
"""


@dataclass(frozen=True)
class HostFacts:
    """What a host has that decides how cumulo runs there."""

    python: tuple[int, int, int]
    executable: str
    platform: str
    gpus: int
    uv: str | None
    tools: bool  # flock and setsid (util-linux)


def cluster_dir(session: Session, cluster_id: str) -> str:
    """The folder of this cluster's files and processes on the session's host."""
    return f"{session.home}/.cache/cumulo/clusters/{cluster_id}"


async def probe(session: Session, python: str) -> HostFacts:
    """Run the host's ``python`` once; ProviderError naming the host when there is no usable Python 3.11+."""
    q = shlex.quote
    out = await session.run(f"command -v {q(python)} >/dev/null 2>&1 || {{ echo no-python; exit 0; }}; "
                            f"{q(python)} -c {q(_PROBE)}", what=f"probing {python}", check=False)
    line = out.strip().splitlines()[-1] if out.strip() else ""
    if line == "no-python" or not line.startswith("{"):
        raise ProviderError(f"{session.host.label} has no usable {python!r} (found: {line or 'nothing'}): install "
                            "Python 3.11 or newer there, or set cumulo.ssh.python to its path")
    data = json.loads(line)
    version = tuple(int(v) for v in data["python"])
    if version < (3, 11):
        raise ProviderError(f"{session.host.label}'s {python} is Python {'.'.join(map(str, version))}; cumulo's "
                            "workers need 3.11 or newer: install it there and set cumulo.ssh.python to its path")
    return HostFacts((version[0], version[1], version[2]), data["executable"], data["platform"], int(data["gpus"]),
                     data["uv"], bool(data["flock"] and data["setsid"]))


async def start_detached(session: Session, folder: str, name: str, argv: list[str]) -> None:
    """Start ``argv`` on the host in its own session, outliving the SSH connection; pid in NAME.pid."""
    q = shlex.quote
    cmd = " ".join(q(a) for a in argv)
    await session.run(
        f"cd {q(folder)} && (setsid {cmd} > {q(name + '.log')} 2>&1 < /dev/null & echo $! > {q(name + '.pid')})",
        what=f"starting {name}")


async def tail_log(session: Session, folder: str, name: str, lines: int = 15) -> str:
    """The last lines of a process's log on the host (for error messages)."""
    out = await session.run(f"tail -n {lines} {shlex.quote(folder + '/' + name + '.log')} 2>/dev/null",
                            check=False, what="reading a log")
    return out.strip()


_STOP = r"""
import os, shutil, signal, sys, time
folder, grace = sys.argv[1], float(sys.argv[2])
if not os.path.isdir(folder):
    print("cumulo-gone"); sys.exit(0)
groups = []
for name in os.listdir(folder):
    if name.endswith(".pid"):
        try:
            groups.append(int(open(os.path.join(folder, name)).read().strip()))
        except ValueError:
            pass
def alive():
    left = []
    for g in groups:
        try:
            os.killpg(g, 0)
            left.append(g)
        except ProcessLookupError:
            pass
    return left
def send(sig):
    for g in alive():
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            pass
send(signal.SIGTERM)
deadline = time.monotonic() + grace
while alive() and time.monotonic() < deadline:
    time.sleep(0.2)
if alive():
    send(signal.SIGKILL)
    time.sleep(0.5)
if alive():
    print("cumulo-still-running", alive()); sys.exit(3)
shutil.rmtree(folder, ignore_errors=True)
print("cumulo-stopped")
"""


async def stop_all(session: Session, folder: str, python: str, *, grace_s: float = 10.0) -> str:
    """Stop every process group of the cluster on this host and remove its folder; 'stopped' or 'gone'.

    Runs with the host's ``python`` (sh's kill cannot signal process groups portably).
    ProviderError when a process survives SIGKILL (it may still be running)."""
    q = shlex.quote
    out = await session.run(f"{q(python)} -c {q(_STOP)} {q(folder)} {grace_s}",
                            check=False, timeout=grace_s + 30, what="stopping the cluster's processes")
    if "cumulo-stopped" in out:
        return "stopped"
    if "cumulo-gone" in out:
        return "gone"
    raise ProviderError(f"could not confirm that cumulo's processes on {session.host.label} stopped "
                        f"({out.strip() or 'no answer'}); they may still run: check {folder} there")
