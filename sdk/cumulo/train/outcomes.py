"""The ranks' results: wait for them, and turn a failure into one TrainingError naming the rank.

After the first failing rank the others get a short grace, not forever (a rank waiting for a
dead peer stops only when its collective times out). The rank whose error is the story is
chosen over the peers that merely saw the connection drop; the message names its worker,
carries its remote traceback and says what became of the other ranks.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from typing import Any

import distributed
from dask.utils import parse_timedelta
from distributed import Client, Future

from .. import _remote, config, progress
from .._workers import WorkerInfo
from ..exceptions import TrainingError

# Errors that peers see when another rank died; the rank that died is the story.
_SECONDARY_TYPES = {"DistBackendError", "DistNetworkError", "DistStoreError", "DistError"}
_SECONDARY_TEXT = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
_FAILURE_GRACE_S = 10.0


def outcome(future: Future) -> dict[str, Any]:
    """A rank's result as data: ``{"ok": True, "value": ...}`` or ``{"ok": False, "error": captured}``."""
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        exc = future.exception()
        captured = _remote.capture(exc)
        tb = future.traceback()
        if tb is not None:
            captured["frames"] = [(f.filename, f.lineno, f.name, f.line or "") for f in traceback.extract_tb(tb)]
        return {"ok": False, "error": captured}
    return {"ok": False, "error": {"type": "Cancelled", "message": f"task {future.status}", "frames": []}}


def raise_for_loading(shards: dict[int | str, list[Any]], infos: Sequence[WorkerInfo]) -> None:
    """Raise TrainingError for the first rank whose data did not load (before any rank starts)."""
    for parts in shards.values():
        for rank, part in enumerate(parts):
            if isinstance(part, Future) and part.status != "finished":
                error = outcome(part)["error"]
                text = _remote.render(error)
                raise TrainingError(
                    f"loading the data of rank {rank} (worker {infos[rank].address}) failed with "
                    f"{error.get('type')}: {error.get('message')}\n\nRemote traceback:\n{text}\n"
                    "No rank was started. Check the dataframe (compute a partition of it) and try again.",
                    rank=rank, remote_traceback=text, remote_type=str(error.get("type")),
                    worker=infos[rank].address,
                )


def raise_if_loaders_left(client: Client, loading: Sequence[Future], infos: Sequence[WorkerInfo]) -> None:
    """Raise TrainingError if a worker that is loading a rank's data left the cluster.

    A load is pinned to its rank's worker, so without this it would wait forever for a
    worker that died (its nanny starts a new one, under a new address).
    """
    alive = live_workers(client)
    gone = [r for r, info in enumerate(infos) if info.address not in alive]
    if not gone:
        return
    client.cancel(list(loading))
    raise TrainingError(
        f"the worker(s) of ranks {gone} ({', '.join(infos[r].address for r in gone)}) left the cluster "
        "while loading their data (died or were killed: see their logs). No rank was started; "
        "call cumulo.train.torch again once the cluster has its workers back.",
        rank=gone[0], worker=infos[gone[0]].address,
    )


def _is_secondary(error: dict[str, Any]) -> bool:
    return error.get("type") in _SECONDARY_TYPES or any(t in error.get("message", "") for t in _SECONDARY_TEXT)


def raise_for_failures(
    outcomes: dict[int, dict[str, Any]],
    infos: Sequence[WorkerInfo],
    pending: list[int],
    gone: list[int],
    timeout: float,
) -> None:
    """Raise one TrainingError for the rank whose failure is the story, saying what became of the others."""
    failed = {r: o["error"] for r, o in outcomes.items() if not o["ok"]}
    if not failed:
        return
    primary = [r for r, e in failed.items() if not _is_secondary(e)]
    rank = min(primary or failed)
    error = failed[rank]
    text = _remote.render(error)
    others = sorted(r for r in failed if r != rank)
    notes = []
    if gone:
        notes.append(
            f"the worker(s) of ranks {gone} ({', '.join(infos[r].address for r in gone)}) left the cluster "
            "during the job (died or were killed: see their logs)."
            + ("" if primary else f" The error above is how rank {rank} saw it.")
        )
    stuck = [r for r in pending if r not in gone]
    if stuck:
        notes.append(
            f"ranks {stuck} were still running; they stop when their collectives time out "
            f"(cumulo.train.timeout = {timeout:.0f}s)."
        )
    if others:
        notes.append(f"ranks {others} failed too (usually as a consequence).")
    if pending and primary:
        notes.append(
            f"ranks {pending} were still running; they stop when their collectives time out "
            f"(cumulo.train.timeout = {timeout:.0f}s)."
        )
    notes.append(
        "The process group was torn down on the ranks that finished and the workers stay usable: "
        "fix the error above and call cumulo.train.torch again."
    )
    raise TrainingError(
        f"rank {rank} of {len(infos)} (worker {infos[rank].address}) raised "
        f"{error.get('type')}: {error.get('message')}\n\n"
        f"Remote traceback (rank {rank}):\n{text}\n" + "\n".join(notes),
        rank=rank,
        remote_traceback=text,
        remote_type=str(error.get("type")),
        worker=infos[rank].address,
    )


def live_workers(client: Client) -> set[str]:
    """The addresses of the workers the scheduler knows now (a rank whose worker is gone will not answer)."""
    return set(client.scheduler_info(n_workers=-1)["workers"])


def collect(client: Client, futures: list[Future], addresses: list[str]) -> dict[int, dict[str, Any]]:
    """Wait for the ranks; after the first failure give the others a short grace, not forever.

    The grace ends early once every rank still out is either done or lost its worker.
    """
    rank_of = {f.key: r for r, f in enumerate(futures)}
    outcomes: dict[int, dict[str, Any]] = {}
    delay = parse_timedelta(config.get("progress.delay", "1s"), "s") or 0.0
    shown = progress.Shown()
    try:
        try:
            distributed.wait(futures, timeout=delay)
        except TimeoutError:
            shown = progress.show(futures)
        failed = False
        for fut in distributed.as_completed(futures):
            outcomes[rank_of[fut.key]] = outcome(fut)
            if not outcomes[rank_of[fut.key]]["ok"]:
                failed = True
                break
        if failed:
            rest = [f for f in futures if rank_of[f.key] not in outcomes]
            deadline = time.monotonic() + _FAILURE_GRACE_S
            while rest and time.monotonic() < deadline:
                alive = live_workers(client)
                if all(f.done() or addresses[rank_of[f.key]] not in alive for f in rest):
                    break
                try:
                    distributed.wait(rest, timeout=0.25)
                except TimeoutError:
                    pass
            for f in rest:
                if f.done():
                    outcomes[rank_of[f.key]] = outcome(f)
    except KeyboardInterrupt:
        shown.close(grace=0)
        client.cancel(futures)
        raise
    finally:
        shown.close()
    return outcomes
