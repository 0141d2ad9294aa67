"""The shared asyncio helpers: a coroutine run from sync code (inside a loop too), and polling to a deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from cumulo.aio import blocking, until


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_blocking_runs_a_coroutine_without_a_loop() -> None:
    assert blocking(_answer()) == 42


def test_blocking_runs_a_coroutine_inside_a_running_loop() -> None:
    async def cell() -> int:
        return blocking(_answer())  # what a notebook cell calling the CLI's code does

    assert asyncio.run(cell()) == 42


def test_until_returns_the_first_answer_that_is_not_none() -> None:
    asked: list[int] = []

    async def probe() -> str | None:
        asked.append(1)
        return "ready" if len(asked) == 3 else None

    assert asyncio.run(until(probe, timeout=5, interval=0.01)) == "ready"
    assert len(asked) == 3


def test_until_gives_up_at_the_deadline_after_one_last_try() -> None:
    asked: list[float] = []

    async def probe() -> None:
        asked.append(time.monotonic())

    start = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(until(probe, timeout=0.2, interval=0.05))
    assert asked[-1] - start > 0.2  # the last try came after the deadline ...
    assert len(asked) >= 2 and asked[-2] - asked[0] <= 0.2  # ... and every earlier one before it: no more after
    assert all(b - a >= 0.049 for a, b in zip(asked, asked[1:], strict=False)), asked  # the interval between tries
