"""The `cumulo` command in real subprocesses: demo, ls, down."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cumulo.life.registry import Registry

from .conftest import wait_for

CUMULO = [sys.executable, "-m", "cumulo.cli"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CUMULO, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ})


def test_demo_runs_the_pipeline_and_closes(registry_path: Path) -> None:
    done = _run("demo", "--rows", "40000", "--partitions", "4", "--workers", "2", "--name", "demo-test")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "2 workers" in out and "backend: pandas" in out
    assert "kept" in out and "of 40,000 trips" in out
    assert "by borough and hour" in out and "pipeline wall time" in out
    assert "worker-seconds" in out and "spend" in out  # usage and cost (no rate set for local)
    assert Registry().latest("demo-test").state == "closed"


OWNER = textwrap.dedent(
    """
    import sys, time, cumulo
    cluster = cumulo.connect(workers=1, name="victim")
    print("up", flush=True)
    for _ in range(600):
        time.sleep(0.1)
        if cluster.client.status != "running":
            break
        try:
            cluster.client.scheduler_info()
        except Exception:
            break
    """
)


def test_ls_and_down_from_another_process(registry_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "up"
        listed = _run("ls", "--open")
        assert listed.returncode == 0 and "victim" in listed.stdout and "running" in listed.stdout
        stopped = _run("down", "victim")
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped victim" in stopped.stdout
        assert Registry().latest("victim").state == "closed"
        wait_for(lambda: "victim" not in _run("ls", "--open").stdout, timeout=30, what="victim to leave `ls --open`")
    finally:
        owner.kill()
        owner.wait(30)


def test_down_all_stops_every_open_cluster(registry_path: Path) -> None:
    owners = [subprocess.Popen([sys.executable, "-c", OWNER.replace('"victim"', f'"v{i}"')], stdout=subprocess.PIPE,
                               text=True) for i in range(2)]
    try:
        for owner in owners:
            assert owner.stdout.readline().strip() == "up"
        stopped = _run("down", "--all")
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped v0" in stopped.stdout and "stopped v1" in stopped.stdout
        assert Registry().list(include_closed=False) == []
        for owner in owners:
            owner.wait(60)  # each owner notices its scheduler is gone and exits by itself
    finally:
        for owner in owners:
            owner.kill()
            owner.wait(30)


def test_down_errors_are_messages_not_tracebacks() -> None:
    unknown = _run("down", "nosuch")
    assert unknown.returncode == 1
    assert "no open cluster named 'nosuch'" in unknown.stderr and "Traceback" not in unknown.stderr
    missing = _run("down")
    assert missing.returncode == 2 and "--all" in missing.stderr
    empty = _run("ls")
    assert empty.returncode == 0 and "no clusters" in empty.stdout
