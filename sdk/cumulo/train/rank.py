"""What runs on each rank's worker: torch.distributed set up, the user's function called, torn down.

:func:`run_rank` is the task :func:`cumulo.train.torch` pins to each worker (pickled by
reference: the workers run the same cumulo). It takes the worker's process-group lock (torch
keeps one default group per process), sets the usual ``RANK``/``WORLD_SIZE``/... variables,
initialises the group (NCCL on ``cuda:0`` of a GPU worker, else Gloo), calls the function
with :func:`context` answering inside it, and always destroys the group and restores the
environment, so that the worker can run the next job. Failures come back as data
(``cumulo._remote.capture``), never as a task error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .. import _remote
from .._workers import require
from ..exceptions import SpecError

_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankContext:
    """What one rank knows about itself; returned by :func:`context` inside ``fn``."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    backend: str
    device: str
    worker: str


# One process group per worker process: torch keeps a single default group.
_PG_LOCK = threading.Lock()
_LOCAL = threading.local()


def context() -> RankContext:
    """The calling rank's context (rank, world size, device, ...). Only valid inside ``fn``."""
    ctx = getattr(_LOCAL, "context", None)
    if ctx is None:
        raise SpecError(
            "cumulo.train.context() is only available inside a function run by cumulo.train.torch."
        )
    return ctx


def run_rank(
    fn: Callable[..., Any], spec: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Body of one rank, run on its worker: set up torch.distributed, call fn, always tear down."""
    timeout = float(spec["timeout"])
    if not _PG_LOCK.acquire(timeout=timeout):
        return {
            "ok": False,
            "error": {
                "type": "WorkerBusy",
                "message": f"worker {spec['worker']} was still running another training job after {timeout:.0f}s",
                "frames": [],
            },
        }
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    dist = None
    try:
        torch_mod = require("torch")
        dist = require("torch.distributed")
        os.environ.update(
            RANK=str(spec["rank"]),
            LOCAL_RANK=str(spec["local_rank"]),
            WORLD_SIZE=str(spec["world_size"]),
            LOCAL_WORLD_SIZE=str(spec["local_world_size"]),
            MASTER_ADDR=spec["master_addr"],
            MASTER_PORT=str(spec["master_port"]),
        )
        device = "cpu"
        if spec["backend"] == "nccl":
            # Let a timed-out NCCL collective raise instead of killing the worker process.
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
            torch_mod.cuda.set_device(0)
            device = "cuda:0"
        dist.init_process_group(
            spec["backend"],
            init_method="env://",
            rank=spec["rank"],
            world_size=spec["world_size"],
            timeout=timedelta(seconds=timeout),
        )
        _LOCAL.context = RankContext(
            rank=spec["rank"],
            local_rank=spec["local_rank"],
            world_size=spec["world_size"],
            local_world_size=spec["local_world_size"],
            master_addr=spec["master_addr"],
            master_port=spec["master_port"],
            backend=spec["backend"],
            device=device,
            worker=spec["worker"],
        )
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the client
            return {"ok": False, "error": _remote.capture(exc, skip=1)}
        return {"ok": True, "value": value if spec["keep_result"] else None}
    except BaseException as exc:  # noqa: BLE001 - setup failed (import, rendezvous, device)
        return {"ok": False, "error": _remote.capture(exc)}
    finally:
        _LOCAL.context = None
        try:
            if dist is not None and dist.is_initialized():
                dist.destroy_process_group()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _PG_LOCK.release()
