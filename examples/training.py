"""Train on the cluster that holds the data: PyTorch DDP and XGBoost through cumulo.train.

    python examples/training.py            # CPU here (Gloo, xgboost on CPU); NCCL/CUDA on GPU workers

Same code on CPU and GPU: cumulo picks Gloo or NCCL, and xgboost's device, from the workers.
Needs the `train` extra: pip install 'cumulo[train]'.
"""

from __future__ import annotations

import time

import dask.dataframe as dd
import numpy as np
import pandas as pd

import cumulo
import cumulo.train


def make_data(rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """Synthetic tabular data: 8 features, a regression target and a balanced binary label."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 8)).astype("float32")
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    df["y"] = X @ np.linspace(0.1, 1.0, 8, dtype="float32") + 0.05 * rng.normal(size=rows).astype("float32")
    df["label"] = ((X[:, 0] * X[:, 1] > 0) ^ (X[:, 2] > 0.5)).astype("int32")
    return df


def train_mlp(shard: pd.DataFrame, epochs: int = 20) -> dict:
    """Runs on every rank: a small MLP wrapped in DDP, trained on this rank's shard."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    ctx = cumulo.train.context()  # rank, world_size, device ("cuda:0" on GPU workers)
    torch.manual_seed(0)
    features = [c for c in shard.columns if c.startswith("x")]
    X = torch.tensor(shard[features].to_numpy(), device=ctx.device)
    y = torch.tensor(shard["y"].to_numpy(), device=ctx.device).unsqueeze(1)
    net = torch.nn.Sequential(torch.nn.Linear(len(features), 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    model = DDP(net.to(ctx.device))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 4))
    state = {k: v.cpu() for k, v in net.state_dict().items()} if ctx.rank == 0 else None
    return {"rank": ctx.rank, "rows": len(shard), "losses": losses, "state": state}


def main() -> None:
    with cumulo.connect(workers=2, threads_per_worker=1) as cluster:
        print(f"cluster {cluster.name}: backend {cluster.backend}")
        ddf = dd.from_pandas(make_data(), npartitions=4)

        t0 = time.perf_counter()
        ranks = cumulo.train.torch(train_mlp, cluster, cumulo.train.by_rank(ddf), epochs=20)
        print(f"torch DDP on {len(ranks)} ranks in {time.perf_counter() - t0:.2f}s")
        for r in ranks:
            print(f"  rank {r['rank']}: {r['rows']} rows, loss {r['losses'][0]} -> {r['losses'][-1]}")

        train, test = ddf.random_split([0.8, 0.2], random_state=0)
        features = [c for c in ddf.columns if c.startswith("x")]
        t0 = time.perf_counter()
        out = cumulo.train.xgboost(
            cluster, train[features], train["label"],
            params={"objective": "binary:logistic", "max_depth": 6, "eval_metric": "error"},
            num_boost_round=50, evals=[(test[features], test["label"], "test")], verbose_eval=False,
        )
        accuracy = 1 - out["history"]["test"]["error"][-1]
        print(f"xgboost.dask in {time.perf_counter() - t0:.2f}s: test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
