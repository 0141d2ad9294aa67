"""An environment ready to send, and what a cluster was given (its card and `cumulo usage` show it)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lock import Lock, for_gpu, lock_for
from .resolve import check_resolvable
from .wheels import build_wheels

__all__ = ["Prepared", "prepare", "recorded"]


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
