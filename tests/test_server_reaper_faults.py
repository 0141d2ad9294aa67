"""Faults that must not switch the guards off: any error of one sweep of the Jupyter server's reaper,
and one unreadable row in the registry (named once, skipped; every other row still lists and reaps)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cumulo import providers
from cumulo.exceptions import RegistryError
from cumulo.jupyter.app import Reaper
from cumulo.jupyter.manager import ClusterManager
from cumulo.life import reaper
from cumulo.life.registry import Registry
from cumulo.providers import Provider


class BrokenSweepProvider(Provider):
    """A provider whose orphan sweep fails with an error that is not cumulo's (an SDK's bug, the OS)."""

    name = "broken-sweep-test"
    sweeps_orphans = True

    async def launch(self, spec: Any, *, cluster_id: str, checkpoint: Any) -> Any:
        raise NotImplementedError("this test provider launches nothing")

    async def sweep_orphans(self, registry: Registry, *, dry_run: bool = True,
                            terminate_unknown: bool = False) -> list[Any]:
        raise RuntimeError("the provider's SDK crashed (test)")


def test_the_servers_reaper_goes_on_after_an_error_that_is_not_cumulos(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(providers._registered, BrokenSweepProvider.name, BrokenSweepProvider)
    manager = ClusterManager(Registry(tmp_path / "registry.db"))
    with pytest.raises(RuntimeError, match="SDK crashed"):
        manager.reap()  # the real sweep fails, as the server's timer meets it

    async def serve() -> int:
        timer = Reaper(manager, 0.05)
        timer.start()
        try:
            for _ in range(200):
                if timer.sweeps >= 3:
                    break
                await asyncio.sleep(0.05)
        finally:
            await timer.stop()  # must not raise: shutdown goes on to close what the server owns
        return timer.sweeps

    with caplog.at_level(logging.ERROR, logger="cumulo.jupyter"):
        sweeps = asyncio.run(serve())
    assert sweeps >= 3, "the timer stopped at the first error"
    assert "sweep failed unexpectedly" in caplog.text and "SDK crashed" in caplog.text


def _two_rows_one_corrupt(path: Path) -> tuple[Registry, str, str]:
    registry = Registry(path)
    good = registry.create("good-one", "local", {"workers": 1}, state="running")
    bad = registry.create("bad-one", "local", {"workers": 1}, state="running")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE clusters SET spec = '{not json' WHERE id = ?", (bad.id,))
    return registry, good.id, bad.id


def test_an_unreadable_row_is_named_once_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry, good, bad = _two_rows_one_corrupt(tmp_path / "registry.db")
    with caplog.at_level(logging.WARNING, logger="cumulo.life.registry"):
        assert [r.id for r in registry.list()] == [good]
        assert [r.id for r in registry.list(include_closed=False)] == [good]
    warned = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    assert len(warned) == 1, warned  # one line, not one per listing
    assert "DELETE FROM clusters WHERE id=" in warned[0] and "provider's console" in warned[0]
    with pytest.raises(RegistryError, match=f"registry row {bad} .*unreadable"):
        registry.get(bad)
    swept = reaper.sweep(registry, dry_run=True, orphans=False)  # the reaper reads every other row
    assert all(c.id != bad for c in swept.clusters)


def test_cumulo_ls_lists_the_other_rows_and_names_the_unreadable_one(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    _, good, bad = _two_rows_one_corrupt(path)
    done = subprocess.run([sys.executable, "-m", "cumulo.cli", "ls"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUMULO_REGISTRY": str(path)})
    assert done.returncode == 0, done.stderr
    assert "good-one" in done.stdout and good in done.stdout
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if bad in line and "unreadable" in line]
