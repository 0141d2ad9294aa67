"""Hearing of MLflow runs: their start and end, and which one is active in this thread.

MLflow has no hook for a run's start and end, so, as MLflow's own autologgers patch the
libraries they follow, :func:`wrap_runs` wraps ``mlflow.start_run`` and ``mlflow.end_run``
(in ``mlflow.tracking.fluent`` and where ``mlflow`` re-exports them; ``with
mlflow.start_run():`` ends through ``end_run``). The wrappers call back before MLflow ends
a run (so the run is still active in that thread) and after it starts one, and never let
a callback's error reach the user's MLflow call. The returned function puts MLflow back.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["active_run_id", "wrap_runs"]

logger = logging.getLogger("cumulo")


def active_run_id() -> str | None:
    """The run MLflow's fluent API has active in this thread (None, also when MLflow is not imported)."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return None
    run = fluent.active_run()
    return None if run is None else run.info.run_id


def wrap_runs(mlflow: Any, started: Callable[[str], None], ending: Callable[[str], None]) -> Callable[[], None]:
    """Call ``started(run_id)`` after each ``mlflow.start_run`` and ``ending(run_id)`` before each
    ``mlflow.end_run`` of an active run; return what undoes it."""
    fluent = mlflow.tracking.fluent
    start, end = fluent.start_run, fluent.end_run

    @functools.wraps(start)
    def start_run(*args: Any, **kwargs: Any) -> Any:
        run = start(*args, **kwargs)
        try:
            started(run.info.run_id)
        except Exception:  # never break the user's MLflow call
            logger.debug("cumulo: following MLflow run failed", exc_info=True)
        return run

    @functools.wraps(end)
    def end_run(*args: Any, **kwargs: Any) -> Any:
        try:
            run_id = active_run_id()
            if run_id is not None:
                ending(run_id)
        except Exception:
            logger.debug("cumulo: logging the totals of an MLflow run failed", exc_info=True)
        return end(*args, **kwargs)

    patched: list[tuple[Any, str, Any]] = []
    for owner in (fluent, mlflow):
        for name, wrapper, original in (("start_run", start_run, start), ("end_run", end_run, end)):
            if getattr(owner, name, None) is original:
                patched.append((owner, name, original))
                setattr(owner, name, wrapper)

    def undo() -> None:
        for owner, name, original in reversed(patched):
            if getattr(owner, name, None) is not original:
                setattr(owner, name, original)
        patched.clear()

    return undo
