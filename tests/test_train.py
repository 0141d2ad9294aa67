"""cumulo.train on a real 2-worker CPU cluster: Gloo DDP, failing ranks, data by rank, xgboost.dask.

GPU variants (NCCL, device="cuda") carry the ``gpu`` marker and skip where NVML sees no GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from distributed.diagnostics import nvml  # noqa: E402

import cumulo.train  # noqa: E402
from cumulo._workers import require  # noqa: E402
from cumulo.exceptions import MissingDependency, SpecError, TrainingError  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"cumulo.progress.enabled": False}):
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster, Client(cluster) as c:
            yield c


@pytest.fixture(autouse=True)
def both_workers(request):
    """Some tests kill a rank's worker (its nanny restarts it): every test starts with both workers back,
    instead of assuming they are (under load a restart takes seconds)."""
    if "client" in request.fixturenames:
        request.getfixturevalue("client").wait_for_workers(2, timeout=120)
    yield


def _synthetic(rows: int = 2048, features: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype("float32")
    w = np.arange(1, features + 1, dtype="float32") / features
    y = X @ w + 0.01 * rng.normal(size=rows).astype("float32")
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(features)])
    df["y"] = y
    return df


def ddp_regression(shard, epochs=30):
    """Train a linear model with DDP on this rank's shard; report losses, grads and context."""
    import os

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    ctx = cumulo.train.context()
    torch.manual_seed(0)
    X = torch.tensor(shard.drop(columns="y").to_numpy())
    y = torch.tensor(shard["y"].to_numpy()).unsqueeze(1)
    model = DDP(torch.nn.Linear(X.shape[1], 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        opt.step()
        losses.append(loss.item())
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(X), y).backward()
    total = torch.tensor([float(len(shard))])
    dist.all_reduce(total)
    return {
        "rank": ctx.rank,
        "world": ctx.world_size,
        "env": {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")},
        "backend": dist.get_backend(),
        "rows": len(shard),
        "total_rows": int(total.item()),
        "losses": losses,
        "grads": [p.grad.clone().numpy() for p in model.parameters()],
    }


def test_ddp_gloo_loss_falls_and_grads_agree(client):
    ddf = dd.from_pandas(_synthetic(), npartitions=4)
    t0 = time.perf_counter()
    out = cumulo.train.torch(ddp_regression, client, cumulo.train.by_rank(ddf), epochs=30)
    first = time.perf_counter() - t0
    assert [o["rank"] for o in out] == [0, 1]
    assert all(o["world"] == 2 and o["backend"] == "gloo" for o in out)
    assert [o["env"]["RANK"] for o in out] == ["0", "1"]
    assert out[0]["env"]["MASTER_PORT"] == out[1]["env"]["MASTER_PORT"]
    assert {o["env"]["MASTER_ADDR"] for o in out} == {"127.0.0.1"}
    # each rank trained on its own half of the data
    assert [o["rows"] for o in out] == [1024, 1024]
    assert out[0]["total_rows"] == 2048
    for o in out:
        assert o["losses"][-1] < 0.1 * o["losses"][0], o["losses"]
    for g0, g1 in zip(out[0]["grads"], out[1]["grads"]):
        np.testing.assert_allclose(g0, g1, rtol=1e-5, atol=1e-7)
    t0 = time.perf_counter()
    only = cumulo.train.torch(ddp_regression, client, cumulo.train.by_rank(ddf), epochs=2, result="rank0")
    second = time.perf_counter() - t0
    assert only["rank"] == 0
    print(f"DDP first run {first:.2f}s, second run {second:.2f}s")


def fails_on_rank_one(steps=3):
    import torch
    import torch.distributed as dist

    ctx = cumulo.train.context()
    x = torch.ones(4)
    for step in range(steps):
        dist.all_reduce(x)
        if ctx.rank == 1 and step == 1:
            raise ValueError(f"boom on rank {ctx.rank} at step {step}")
    return x.tolist()


def test_failing_rank_is_named_with_traceback_and_workers_stay_usable(client):
    t0 = time.perf_counter()
    with pytest.raises(TrainingError) as info:
        cumulo.train.torch(fails_on_rank_one, client, timeout="180s")
    elapsed = time.perf_counter() - t0
    err = info.value
    assert err.rank == 1
    assert err.remote_type == "ValueError"
    assert "rank 1 of 2" in str(err)
    assert "boom on rank 1 at step 1" in str(err)
    assert "fails_on_rank_one" in err.remote_traceback
    assert 'raise ValueError(f"boom on rank' in err.remote_traceback  # source line filled in
    assert err.worker in client.scheduler_info()["workers"]
    # rank 1's error ends the call, not rank 0 waiting out its 180 s timeout in the collective (a hang-catcher)
    assert elapsed < 90, f"a failing rank took {elapsed:.1f}s to surface"
    # IPython shows the remote traceback, not cumulo's frames
    assert any("fails_on_rank_one" in line for line in err._render_traceback_())
    # the same workers run the next job at once
    t0 = time.perf_counter()
    assert cumulo.train.torch(fails_on_rank_one, client, steps=1) == [[2.0] * 4, [2.0] * 4]
    assert time.perf_counter() - t0 < 60  # a hang-catcher: it takes about a second


def test_explicit_workers_and_bad_arguments(client):
    workers = sorted(client.scheduler_info()["workers"])
    out = cumulo.train.torch(lambda: cumulo.train.context().worker, client, workers=workers[::-1])
    assert out == workers[::-1]
    with pytest.raises(SpecError, match="unknown worker"):
        cumulo.train.torch(lambda: None, client, workers=["tcp://127.0.0.1:1"])
    with pytest.raises(SpecError, match="result must be"):
        cumulo.train.torch(lambda: None, client, result="rank1")
    with pytest.raises(SpecError, match="dask collection"):
        cumulo.train.by_rank([1, 2, 3])
    with pytest.raises(SpecError, match="only available inside"):
        cumulo.train.context()


def test_missing_extra_names_it(client, monkeypatch):
    with pytest.raises(MissingDependency, match=r"cumulo\[train\]"):
        require("cumulo_no_such_module_for_tests")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.setitem(sys.modules, "xgboost", None)
    with pytest.raises(MissingDependency, match=r"pip install 'cumulo\[train\]'"):
        cumulo.train.torch(lambda: 0, client)
    with pytest.raises(MissingDependency, match=r"pip install 'cumulo\[train\]'"):
        cumulo.train.xgboost(client, None, None)


def test_importing_cumulo_train_imports_neither_torch_nor_xgboost():
    code = "import sys, cumulo.train, cumulo.remote_cell; assert not {'torch', 'xgboost'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy(), timeout=60)


def _classification(rows: int = 20_000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 6))
    # a non-linear rule with balanced classes: a constant guess scores about 0.5
    label = ((X[:, 0] * X[:, 1] > 0) ^ (X[:, 2] > 0.5)).astype("int32")
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    df["label"] = label
    return df


def test_xgboost_dask_accuracy(client):
    pytest.importorskip("xgboost")
    import xgboost.dask as dxgb

    df = _classification()
    ddf = dd.from_pandas(df, npartitions=4)
    train, test = ddf.random_split([0.8, 0.2], random_state=0)
    X, y = train.drop(columns="label"), train["label"]
    Xt, yt = test.drop(columns="label"), test["label"]
    t0 = time.perf_counter()
    out = cumulo.train.xgboost(
        client, X, y,
        params={"objective": "binary:logistic", "max_depth": 6, "eta": 0.3, "eval_metric": "error"},
        num_boost_round=60, evals=[(Xt, yt, "test")], verbose_eval=False,
    )
    elapsed = time.perf_counter() - t0
    config = out["booster"].save_config()
    assert '"device":"cpu"' in config.replace(" ", "")
    pred = dxgb.predict(client, out["booster"], Xt).compute()
    accuracy = float(((pred > 0.5).astype("int32") == yt.compute().to_numpy()).mean())
    baseline = max(df["label"].mean(), 1 - df["label"].mean())
    assert baseline < 0.6
    assert accuracy > 0.9, accuracy
    assert out["history"]["test"]["error"][-1] < 0.1
    print(f"xgboost.dask: accuracy {accuracy:.3f} (majority class {baseline:.3f}) in {elapsed:.2f}s")


def _gpu_count() -> int:
    try:
        return nvml.device_get_count()
    except Exception:
        return 0


gpu_only = pytest.mark.skipif(_gpu_count() == 0, reason="NVML reports no GPU on this machine")


@pytest.mark.gpu
@gpu_only
def test_ddp_nccl_on_gpu_workers():
    pytest.importorskip("dask_cuda")
    from dask_cuda import LocalCUDACluster

    def on_gpu():
        import torch
        import torch.distributed as dist

        x = torch.ones(2, device=cumulo.train.context().device)
        dist.all_reduce(x)
        return dist.get_backend(), x.cpu().tolist()

    with LocalCUDACluster(host="127.0.0.1", dashboard_address=":0") as cluster, Client(cluster) as c:
        n = len(c.scheduler_info()["workers"])
        out = cumulo.train.torch(on_gpu, c)
        assert out == [("nccl", [float(n)] * 2)] * n


@pytest.mark.gpu
@gpu_only
def test_xgboost_uses_cuda_on_gpu_workers():
    pytest.importorskip("dask_cuda")
    pytest.importorskip("xgboost")  # the GPU check kit's machine may lack it: skipped, with the reason
    from dask_cuda import LocalCUDACluster

    with LocalCUDACluster(host="127.0.0.1", dashboard_address=":0") as cluster, Client(cluster) as c:
        ddf = dd.from_pandas(_classification(5000), npartitions=2)
        out = cumulo.train.xgboost(c, ddf.drop(columns="label"), ddf["label"], num_boost_round=5)
        assert '"device":"cuda' in out["booster"].save_config().replace(" ", "")


def late_rank(sleep):
    import time

    import torch
    import torch.distributed as dist

    if cumulo.train.context().rank == 1:
        time.sleep(sleep)
    x = torch.ones(2)
    dist.all_reduce(x)
    return x.tolist()


def test_a_missing_peer_times_out_instead_of_hanging(client):
    t0 = time.perf_counter()
    with pytest.raises(TrainingError, match="Timed out") as info:
        cumulo.train.torch(late_rank, client, 4, timeout="1s")
    assert info.value.rank == 0
    assert time.perf_counter() - t0 < 60  # a hang-catcher: had the 1 s not applied, rank 1 would have come at 4 s
    assert cumulo.train.torch(late_rank, client, 0) == [[2.0, 2.0]] * 2


def sleepy(seconds):
    import time

    time.sleep(seconds)
    return cumulo.train.context().rank


def test_progress_bar_in_a_terminal_and_off_by_config(client, monkeypatch, capsys):
    from cumulo import progress

    monkeypatch.setattr(progress, "surface", lambda: "terminal")
    with dask.config.set({"cumulo.progress.enabled": True, "cumulo.progress.delay": "0.2s"}):
        assert cumulo.train.torch(sleepy, client, 1.0) == [0, 1]
        text = ""
        deadline = time.monotonic() + 5
        while "100% Completed" not in text and time.monotonic() < deadline:
            time.sleep(0.05)
            text += capsys.readouterr().out
        assert "100% Completed" in text
    with dask.config.set({"cumulo.progress.enabled": False, "cumulo.progress.delay": "0.2s"}):
        assert cumulo.train.torch(sleepy, client, 0.5) == [0, 1]
        time.sleep(0.3)
        assert "Completed" not in capsys.readouterr().out


def _bad_partition(df):
    raise KeyError("no column 'z' in this partition")


def test_a_failing_data_load_starts_no_rank(client):
    ddf = dd.from_pandas(_synthetic(64), npartitions=2).map_partitions(_bad_partition, meta=_synthetic(1))
    with pytest.raises(TrainingError, match="loading the data of rank 0") as info:
        cumulo.train.torch(lambda shard: len(shard), client, cumulo.train.by_rank(ddf))
    assert "_bad_partition" in info.value.remote_traceback


def _slow_then_dies_on_the_last_partition(df):
    import os
    import time

    time.sleep(1.0)
    if len(df) and df.index.min() >= 60:  # rows 60..89: the last of three partitions, rank 1's
        os._exit(3)  # the worker loading rank 1's data dies; its nanny starts a new one at a new address
    return df


def test_a_worker_that_dies_while_loading_fails_the_call_instead_of_hanging():
    ddf = dd.from_pandas(_synthetic(90), npartitions=3).map_partitions(
        _slow_then_dies_on_the_last_partition, meta=_synthetic(1)
    )
    outcome: dict = {}

    def call(c):
        try:
            outcome["value"] = cumulo.train.torch(lambda shard: len(shard), c, cumulo.train.by_rank(ddf))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    # its own cluster: the nanny replaces the dead worker with a new process
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster, Client(cluster) as c:
        t = threading.Thread(target=call, args=(c,), daemon=True)
        t.start()
        t.join(90)
    assert not t.is_alive(), "train.torch still waits for the data of a worker that died"
    error = outcome.get("error")
    assert isinstance(error, TrainingError), outcome
    assert "left the cluster while loading their data" in str(error) and "No rank was started" in str(error)
    assert error.rank == 1


def dies_on_rank_one():
    import os

    import torch
    import torch.distributed as dist

    if cumulo.train.context().rank == 1:
        os._exit(3)  # the worker process dies; its nanny starts a new one
    x = torch.ones(2)
    dist.all_reduce(x)
    return x.tolist()


def test_a_dead_worker_is_reported_and_the_cluster_recovers():
    # its own cluster: the nanny replaces the dead worker with a new process
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster, Client(cluster) as c:
        t0 = time.perf_counter()
        with pytest.raises(TrainingError, match=r"ranks \[1\] .* left the cluster"):
            cumulo.train.torch(dies_on_rank_one, c, timeout="180s")
        assert time.perf_counter() - t0 < 90  # the death ends the call, not the 180 s timeout (a hang-catcher)
        c.wait_for_workers(2, timeout=30)
        assert cumulo.train.torch(late_rank, c, 0) == [[2.0, 2.0]] * 2


def test_rank_placement_follows_the_gpus(monkeypatch):
    """Which workers get ranks, decided from what each worker reports (no GPU needed to check)."""
    from cumulo._workers import WorkerInfo
    from cumulo.train import placement

    fleet = [
        WorkerInfo("tcp://10.0.0.1:1", "10.0.0.1", "a", gpus=1, nthreads=1),
        WorkerInfo("tcp://10.0.0.1:2", "10.0.0.1", "a", gpus=1, nthreads=1),
        WorkerInfo("tcp://10.0.0.2:1", "10.0.0.2", "b", gpus=0, nthreads=1),
    ]
    monkeypatch.setattr(
        placement, "probe_workers", lambda client, workers=None: [w for w in fleet if not workers or w.address in workers]
    )
    infos, on_gpu = placement.choose_workers(None, None)
    assert on_gpu and [i.address for i in infos] == ["tcp://10.0.0.1:1", "tcp://10.0.0.1:2"]
    assert placement.local_ranks(infos) == [(0, 2), (1, 2)]
    with pytest.raises(SpecError, match="have no GPU but the others do"):
        placement.choose_workers(None, [w.address for w in fleet])
    infos, on_gpu = placement.choose_workers(None, ["tcp://10.0.0.2:1"])
    assert not on_gpu
    fleet[0] = WorkerInfo("tcp://10.0.0.1:1", "10.0.0.1", "a", gpus=4, nthreads=1)
    with pytest.warns(UserWarning, match="dask-cuda"):
        placement.choose_workers(None, None)


def _tag_worker(df):
    from distributed import get_worker

    return df.assign(computed_on=get_worker().address)


def _where_my_rows_were_computed(shard):
    return cumulo.train.context().worker, sorted(set(shard["computed_on"])), len(shard)


def test_each_rank_gets_its_partitions_computed_on_its_own_worker(client):
    meta = _synthetic(1).iloc[:0].assign(computed_on="")
    ddf = dd.from_pandas(_synthetic(300), npartitions=3).map_partitions(_tag_worker, meta=meta)
    out = cumulo.train.torch(_where_my_rows_were_computed, client, cumulo.train.by_rank(ddf))
    for worker, computed_on, _ in out:
        assert computed_on == [worker]
    assert [rows for *_, rows in out] == [100, 200]  # partitions [0] and [1, 2]
    # more ranks than partitions: the rank without data gets an empty frame with the right columns
    small = dd.from_pandas(_synthetic(10), npartitions=1)
    sizes = cumulo.train.torch(lambda shard: (len(shard), list(shard.columns)), client, cumulo.train.by_rank(small))
    assert sorted(n for n, _ in sizes) == [0, 10]
    assert sizes[0][1] == sizes[1][1]


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_training_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "training.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
        for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert "rank 1 failed: ValueError: rank 1 ran out of luck" in text
    assert "test accuracy: 0.9" in text
    assert "running in process" in text


@pytest.mark.slow
def test_training_example_script_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "training.py")],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch DDP on 2 ranks" in proc.stdout
    assert "test accuracy 0.9" in proc.stdout
