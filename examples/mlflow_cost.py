"""What each experiment cost, in MLflow: two XGBoost runs of different sizes on one cluster, compared by
accuracy and by cost (the script twin of notebooks/mlflow_cost.ipynb).

    python examples/mlflow_cost.py [--tracking-uri http://127.0.0.1:5000] [--rate 24]

``cumulo.mlflow.autolog()`` logs the cluster's params, each run's totals (``cumulo.cost_usd``,
``cumulo.busy_fraction``; GPU energy and CO2 where the GPUs measure power) and the training call's own
figures (``cumulo.train.cost_usd``) to the active run, with the usage report and plot as artifacts.
Per-cell metrics need a notebook (``%load_ext cumulo``). Without ``--tracking-uri`` the runs go to a
SQLite file here (``mlflow_cost.db``). Needs ``pip install 'cumulo[mlflow,train]'``.
"""

from __future__ import annotations

import argparse

import dask
import dask.dataframe as dd
import mlflow
import numpy as np
import pandas as pd

import cumulo
import cumulo.train


def data() -> tuple[dd.DataFrame, dd.DataFrame, list[str]]:
    """Synthetic rows whose label needs a few splits to learn, split 80/20."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, 8)).astype("float32")
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    df["label"] = ((X[:, 0] * X[:, 1] > 0) ^ (X[:, 2] > 0.5)).astype("int32")
    train_df, test_df = dd.from_pandas(df, npartitions=4).random_split([0.8, 0.2], random_state=0)
    return train_df, test_df, [f"x{i}" for i in range(8)]


def train_run(cluster: cumulo.Cluster, name: str, depth: int, rounds: int) -> str:
    """One MLflow run: an XGBoost model trained on the cluster, its accuracy next to what cumulo logs."""
    train_df, test_df, features = data()
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({"max_depth": depth, "rounds": rounds})
        out = cumulo.train.xgboost(
            cluster, train_df[features], train_df["label"],
            params={"objective": "binary:logistic", "max_depth": depth, "eval_metric": "error"},
            num_boost_round=rounds, evals=[(test_df[features], test_df["label"], "test")], verbose_eval=False,
        )
        mlflow.log_metric("test_accuracy", 1 - out["history"]["test"]["error"][-1])
    return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="", help="your MLflow server ('' = a SQLite file here)")
    parser.add_argument("--rate", type=float, default=24.0, help="$ per local worker-hour")
    args = parser.parse_args()
    dask.config.set({"cumulo.cost.rate-per-worker-hour": args.rate})
    mlflow.set_tracking_uri(args.tracking_uri or "sqlite:///mlflow_cost.db")
    mlflow.set_experiment("cumulo-cost-demo")
    log = cumulo.mlflow.autolog()
    with cumulo.connect(workers=2, threads_per_worker=1, name="mlflow-demo") as cluster:
        train_df, _, features = data()  # the first call starts XGBoost on the workers: outside any run
        cumulo.train.xgboost(cluster, train_df[features], train_df["label"], num_boost_round=1)
        ids = {name: train_run(cluster, name, depth, rounds) for name, depth, rounds in (("small", 2, 10),
                                                                                         ("big", 8, 300))}
    log.outbox.flush(60)
    for name, run_id in ids.items():
        m = mlflow.get_run(run_id).data.metrics
        print(f"{name}: accuracy {m['test_accuracy']:.3f}, cost ${m.get('cumulo.cost_usd', float('nan')):.4f} "
              f"(training ${m.get('cumulo.train.cost_usd', float('nan')):.4f}), busy {m.get('cumulo.busy_fraction', 0):.0%}")
    cumulo.mlflow.autolog(disable=True)


if __name__ == "__main__":
    main()
