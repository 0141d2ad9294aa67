"""``%%cumulo`` and its mechanism (cumulo.remote_cell) on a real 2-worker CPU cluster.

The magic itself is checked in a real IPython kernel: a small notebook built here
is executed by nbclient, and its outputs (streamed stdout/stderr, the remote
traceback) are read back.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from distributed import Client, Event, LocalCluster
from distributed.diagnostics import nvml

from cumulo._workers import visible_gpu_count
from cumulo.exceptions import NoGPUWorkers, RemoteError, SpecError
from cumulo.remote_cell import run_cell


@pytest.fixture(scope="module")
def client():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster, Client(cluster) as c:
        yield c


class _Recorder:
    """A text stream that remembers when each piece of text arrived; ``on_first`` is called as the first does."""

    def __init__(self, on_first: Callable[[], None] | None = None) -> None:
        self.chunks: list[tuple[float, str]] = []
        self.on_first = on_first

    def write(self, s: str) -> int:
        self.chunks.append((time.monotonic(), s))
        if len(self.chunks) == 1 and self.on_first is not None:
            self.on_first()
        return len(s)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(s for _, s in self.chunks)


def _seen_here(client: Client) -> tuple[str, Callable[[], None]]:
    """A distributed Event a cell can wait on, and what sets it (given to _Recorder as ``on_first``)."""
    name = f"seen-{uuid.uuid4().hex}"
    return name, lambda: Event(name, client=client).set()


#: A cell that prints, then waits (at most 30 s) until the notebook side has received that output.
WAITS_TO_BE_SEEN = "from distributed import Event\nseen = Event(EVENT).wait(30)\n"


def test_inputs_outputs_and_streamed_output(client):
    event, release = _seen_here(client)
    out, err = _Recorder(on_first=release), _Recorder()
    code = (
        "import sys, time, os\n"
        "print('started with', a)\n"
        "print('a warning', file=sys.stderr)\n"
        + WAITS_TO_BE_SEEN +
        "total = a + b\n"
        "where = os.getpid()\n"
        "print('finished')\n"
    )
    values = run_cell(code, client, inputs={"a": 20, "b": 22, "EVENT": event}, outputs=["total", "where", "seen"],
                      stdout=out, stderr=err)
    assert values["total"] == 42
    assert values["where"] != os.getpid()  # it ran in a worker process
    assert out.text == "started with 20\nfinished\n"
    assert err.text == "a warning\n"
    assert values["seen"] is True, "the first line should arrive while the cell still runs (it waited for it)"


def test_a_partial_line_arrives_before_the_cell_ends(client):
    event, release = _seen_here(client)
    out = _Recorder(on_first=release)
    code = "import sys\nsys.stdout.write('working...')\n" + WAITS_TO_BE_SEEN + "print(' done')\n"
    values = run_cell(code, client, inputs={"EVENT": event}, outputs=["seen"], stdout=out)
    assert out.text == "working... done\n"
    assert out.chunks[0][1] == "working..."
    assert values["seen"] is True, "the partial line should come while the cell waits"


def test_large_inputs_travel_as_data(client):
    import numpy as np

    big = np.arange(1_000_000, dtype="float64")  # 8 MB: scattered, not embedded in the task
    values = run_cell("total = float(big.sum())", client, inputs={"big": big}, outputs=["total"])
    assert values["total"] == float(big.sum())


def test_output_of_concurrent_work_is_not_mixed_in(client):
    """Prints from other tasks on the same worker stay in the worker's log."""
    out = _Recorder()
    noisy = client.submit(_print_until, 1.0, pure=False)
    values = run_cell("x = 1\nprint('mine')", client, outputs=["x"], stdout=out)
    noisy.result()
    assert values == {"x": 1}
    assert out.text == "mine\n"


def _print_until(seconds: float) -> int:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        print("noise from another task")
        n += 1
        time.sleep(0.05)
    return n


def test_exception_comes_back_with_the_cell_traceback(client):
    out = _Recorder()
    code = "print('before')\ndef inner(v):\n    raise ValueError(f'bad value {v}')\ninner(3)\n"
    with pytest.raises(RemoteError) as info:
        run_cell(code, client, stdout=out)
    err = info.value
    assert err.remote_type == "ValueError"
    assert "bad value 3" in str(err)
    assert "raise ValueError(f'bad value {v}')" in err.remote_traceback
    assert "in inner" in err.remote_traceback
    assert "_execute" not in err.remote_traceback  # cumulo's own frames are dropped
    assert err.worker in client.scheduler_info()["workers"]
    assert out.text == "before\n"
    # the workers still run cells after a failure
    assert run_cell("y = 2", client, outputs=["y"]) == {"y": 2}


def test_syntax_error_points_at_the_cell_line(client):
    with pytest.raises(RemoteError) as info:
        run_cell("x = 1\ny = (x +\n", client)
    assert info.value.remote_type == "SyntaxError"
    assert "<cumulo-cell-" in info.value.remote_traceback


def test_missing_or_unpicklable_outputs(client):
    with pytest.raises(RemoteError, match=r"did not define \['nope'\]"):
        run_cell("x = 1", client, outputs=["nope"])
    with pytest.raises(RemoteError, match="cannot be sent back"):
        run_cell("import threading\nlock = threading.Lock()", client, outputs=["lock"])
    with pytest.raises(SpecError):
        run_cell("x = 1", client, outputs=["not a name"])


@pytest.mark.skipif(nvml.device_get_count() > 0, reason="this machine has a GPU")
def test_gpu_requested_without_gpu_workers(client):
    with pytest.raises(NoGPUWorkers, match="drop --gpu"):
        run_cell("x = 1", client, outputs=["x"], gpu=True)


@pytest.mark.gpu
def test_gpu_cell_runs_on_the_gpu_worker_of_a_mixed_cluster():
    """Three workers that see no GPU and one that sees GPU 0: every gpu=True cell runs on that one."""
    from distributed import Nanny, Scheduler, SpecCluster

    def worker(visible: str) -> dict:
        return {"cls": Nanny, "options": {"host": "127.0.0.1", "nthreads": 1, "dashboard": False,
                                          "env": {"CUDA_VISIBLE_DEVICES": visible}}}

    workers = {"gpu": worker("0"), **{f"cpu-{i}": worker("") for i in range(3)}}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as c:
        c.wait_for_workers(4, timeout=60)
        seen = c.run(visible_gpu_count)  # what the routing reads from each worker
        (gpu_worker,) = [a for a, n in seen.items() if n > 0]  # the premise: one GPU worker among four
        code = ("from distributed import get_worker\n"
                "from cumulo._workers import visible_gpu_count\n"
                "where, gpus = get_worker().address, visible_gpu_count()")
        ran = [run_cell(code, c, outputs=["where", "gpus"], gpu=True) for _ in range(8)]
        assert {r["where"] for r in ran} == {gpu_worker}, ran
        assert all(r["gpus"] >= 1 for r in ran)
        # without gpu=True the same cell is free to run anywhere: the routing above is the flag's doing
        anywhere = {run_cell(code, c, outputs=["where"])["where"] for _ in range(8)}
        assert anywhere - {gpu_worker}, anywhere


# ------------------------------------------------------------------ a real kernel

NOTEBOOK_CELLS = [
    "from distributed import LocalCluster, Client\n"
    "lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,\n"
    "                  host='127.0.0.1', dashboard_address=':0')\n"
    "client = Client(lc)",
    "%load_ext cumulo",
    "a, b = 20, 22",
    "%%cumulo --in a,b --out total\n"
    "import sys\n"
    "print('partial', a)\n"
    "print('to stderr', file=sys.stderr)\n"
    "total = a + b",
    "assert total == 42, total\nprint('total', total)",
    "%%cumulo\nraise ValueError('remote boom')",
    "%%cumulo --in nothing_here\nx = 1",
    "import dask, time, cumulo.progress\n"
    "with dask.config.set({'cumulo.progress.delay': '0.1s'}):\n"
    "    cumulo.progress.wait(client.map(time.sleep, [1.0, 1.0], pure=False))",
    "other = Client(lc, set_as_default=False)",
    "%%cumulo --cluster other --out pid\nimport os\npid = os.getpid()",
    "assert pid != __import__('os').getpid(); other.close(); client.close(); lc.close()",
]


def test_magic_in_a_real_kernel(tmp_path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS]
    sdk = str(Path(__file__).resolve().parents[1] / "sdk")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([sdk, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    executor = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}
    )
    with _environ(env):
        executor.execute()

    def streams(i: int, name: str) -> str:
        return "".join(o.get("text", "") for o in nb.cells[i].outputs if o.get("name") == name)

    def error(i: int) -> dict:
        errs = [o for o in nb.cells[i].outputs if o.output_type == "error"]
        return errs[0] if errs else {}

    for i in (0, 1, 2, 3, 4, 7, 8, 9, 10):
        assert not error(i), (i, error(i))
    assert streams(3, "stdout") == "partial 20\n"
    assert streams(3, "stderr") == "to stderr\n"
    assert streams(4, "stdout") == "total 42\n"
    remote = error(5)
    assert remote["ename"] == "RemoteError"
    tb = "\n".join(remote["traceback"])
    assert "remote boom" in tb and "<cumulo-cell-" in tb and "raise ValueError('remote boom')" in tb
    assert "remote_cell.py" not in tb  # the notebook shows the cell's traceback, not cumulo's frames
    # slow work shows dask's progress widget in a notebook
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb.cells[7].outputs)
    # ... drawn while the cell blocks, and full when it ends (not a bar that starts listening after the cell,
    # for futures already released)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    assert bars and all(b["value"] == 1.0 for b in bars), bars
    # IPython prints a UsageError to stderr rather than as a traceback
    assert "UsageError" in streams(6, "stderr") and "nothing_here" in streams(6, "stderr")


class _environ:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __enter__(self) -> None:
        self.saved = dict(os.environ)
        os.environ.update(self.env)

    def __exit__(self, *exc: object) -> None:
        os.environ.clear()
        os.environ.update(self.saved)

