"""Who owns a cluster row: a process identified by more than its PID.

A bare PID says little: containers number processes from 1 again after a
restart (and a restarted pod keeps its hostname), and any host reuses PIDs
after a crash. So an owner is recorded as (host, boot id, PID, process start
time), and a recorded owner counts as alive only when all four still match a
running process. Where the start time cannot be read (no ``/proc``), liveness is
unknowable and callers fall back on the row's heartbeat alone.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Owner", "alive", "boot_id", "start_time", "this_process"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.lru_cache(maxsize=1)
def boot_id() -> str | None:
    """This machine's boot id (Linux), None where the kernel does not publish one."""
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def start_time(pid: int) -> float | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None if unknown or not running.

    Ticks are compared only with ticks read the same way on the same boot, so
    no conversion to wall time (and its rounding) is needed.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after its closing one
    rest = stat.rsplit(")", 1)[-1].split()
    try:
        return float(rest[19])  # field 22, starttime; rest[0] is field 3
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    """The identity of a process that owns a cluster row."""

    pid: int
    host: str
    started: float | None
    boot: str | None


def this_process() -> Owner:
    """The identity of the running process."""
    pid = os.getpid()
    return Owner(pid=pid, host=socket.gethostname(), started=start_time(pid), boot=boot_id())


def alive(owner: Owner) -> bool | None:
    """Whether the recorded owner still runs: None when that is unknowable from here.

    Unknowable: another host, or a row recorded without a start time (an older
    cumulo, or a system without ``/proc``); callers then go by the heartbeat. A
    different boot id, a missing PID, or the PID now held by a process that
    started at another time all mean the owner is gone.
    """
    here = this_process()
    if owner.host != here.host:
        return None
    if owner.boot is not None and here.boot is not None and owner.boot != here.boot:
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process holds the PID: its start time decides
    if owner.started is None:
        return None
    now_started = start_time(owner.pid)
    if now_started is None:
        return None
    return now_started == owner.started
