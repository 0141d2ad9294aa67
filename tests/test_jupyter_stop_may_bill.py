"""Stop on a "stop failed: may still bill" row, through a real Jupyter server's REST API (the sidebar's Stop).

The row is made the way it happens: a launch whose cleanup fails (tests/faulty_provider.py, whose stop()
raises while a file says its API is down). DELETE then drives the provider for real: while it still fails
the row stays open and the reply carries the error the sidebar shows; once it answers, the row closes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import cumulo
from cumulo.exceptions import TerminateError

from . import faulty_provider
from .test_jupyter_handlers import call, on_server_loop

# pytest-jupyter's fixtures, scoped to this module (as in test_jupyter_handlers.py)
from pytest_jupyter.jupyter_server import *  # noqa: E402,F403


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}


@pytest.fixture
def stuck(tmp_path: Path) -> dict[str, Path]:
    """A "may still bill" row named 'half': its launch failed and so did the cleanup (the API is down)."""
    faulty_provider.register()
    blocker, log = tmp_path / "api-down", tmp_path / "stopped"
    blocker.write_text("x")
    options = {"fail_launch": True, "stop_fails_while": str(blocker), "stopped_log": str(log)}
    with pytest.raises(TerminateError, match="may still bill"):
        cumulo.connect(faulty_provider.NAME, name="half", options=options)
    return {"blocker": blocker, "log": log}


async def _row(jp_fetch: Any, name: str) -> dict[str, Any]:
    status, listing = await call(jp_fetch, "GET", "cumulo/clusters")
    assert status == 200, listing
    rows = [r for r in listing["clusters"] if r["name"] == name]
    assert len(rows) == 1, json.dumps(listing)[:2000]
    return rows[0]


@on_server_loop
async def test_stop_keeps_a_may_bill_row_open_while_the_provider_fails_and_closes_it_once_it_answers(
    jp_fetch: Any, jp_serverapp: Any, stuck: dict[str, Path]
) -> None:
    before = await _row(jp_fetch, "half")
    assert before["state"] == "stop-failed" and before["may_bill"] and before["stoppable"], before

    # the provider's API is still down: Stop is refused with its error, and the row stays open and visible
    status, reply = await call(jp_fetch, "DELETE", "cumulo/clusters/half")
    assert status == 502, reply
    assert reply["error"] == "TerminateError" and "may still bill" in reply["message"], reply
    after = await _row(jp_fetch, "half")
    assert after["state"] == "stop-failed" and after["may_bill"] and after["stoppable"], after
    assert not stuck["log"].exists(), "nothing was stopped while the API was down"

    stuck["blocker"].unlink()  # the API is back
    status, final = await call(jp_fetch, "DELETE", "cumulo/clusters/half")
    assert status == 200, final
    assert final["name"] == "half" and final["state"] == "closed" and not final["may_bill"], final
    closed = await _row(jp_fetch, "half")
    assert closed["state"] == "closed" and not closed["stoppable"], closed
    stopped = stuck["log"].read_text().split()
    assert stopped[0].startswith("thing-"), stopped  # the provider really stopped the billable thing
    # and it is gone from what can be stopped: a second Stop finds no open cluster
    status, reply = await call(jp_fetch, "DELETE", "cumulo/clusters/half")
    assert status == 404 and "no open cluster named 'half'" in reply["message"], reply
