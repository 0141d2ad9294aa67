"""What the kernel left behind (teardown steps 3 and 4): its registry rows, then its processes.

Rows the kernel owned (found by its process id and host) that are still open are stopped
from this process through the lifecycle (:func:`cumulo.life.inventory.stop_record`), and rows of
clusters that died with the kernel are marked lost (:func:`cumulo.life.inventory.reconcile`); a
row that could not be stopped is reported as "may still bill". Then whatever is left of the
kernel's process group (it runs in its own session) is killed, never our own group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

from ..life.inventory import reconcile, stop_record, who
from ..life.registry import ClusterRecord, Registry
from .kernel import TEARDOWN_TIMEOUT


def owned_rows(registry: Registry, pid: int | None, since: float) -> list[ClusterRecord]:
    """The registry rows (open or closed) that the kernel with process id ``pid`` created since ``since``."""
    if not pid:
        return []
    host = socket.gethostname()
    return [r for r in registry.list(include_closed=True, since=since - 5.0)
            if r.owner_pid == pid and r.owner_host == host and r.created >= since - 5.0]


async def stop_left_open(registry: Registry, pid: int | None, since: float) -> list[str]:
    """Stop, through the lifecycle, rows the kernel owned that are still open; names of those that failed."""
    failed = []
    for rec in owned_rows(registry, pid, since):
        if not rec.is_open:
            continue
        try:
            await asyncio.wait_for(stop_record(rec, registry, why=who("stopped by `cumulo run` teardown")),
                                   TEARDOWN_TIMEOUT)
        except Exception:
            failed.append(rec.name)
    reconcile(registry)  # rows of clusters that lived in the kernel and died with it: lost
    return [r.name for r in owned_rows(registry, pid, since) if r.is_open and r.name not in failed] + failed


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc where there is one."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except OSError:
            return []
        return [pgid]
    alive = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields_ = stat[stat.rfind(")") + 2:].split()
        if len(fields_) > 2 and fields_[0] != "Z" and int(fields_[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def kill_group(pgid: int | None) -> int:
    """Kill what is left of the kernel's process group; how many processes that was."""
    if not pgid or pgid == os.getpgid(0):
        return 0  # never our own group
    left = _group_alive(pgid)
    if not left:
        return 0
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except OSError:
            break
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_alive(pgid):
            break
    return len(left)
