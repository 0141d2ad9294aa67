"""The synthetic taxi data and the demo pipeline, checked against plain pandas on the same files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import cumulo
from cumulo import datasets, pipeline
from cumulo.exceptions import SpecError


def test_partitions_are_seeded_and_realistic() -> None:
    a = datasets.taxi_partition(5000, seed=3)
    b = datasets.taxi_partition(5000, seed=3)
    c = datasets.taxi_partition(5000, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert (a.dropoff_datetime >= a.pickup_datetime).all()
    assert a.pickup_zone.between(1, datasets.N_ZONES).all()
    assert set(a.payment_type.cat.categories) == set(datasets.PAYMENT_TYPES)
    assert (a.tip_amount[a.payment_type == "cash"] == 0).all()
    assert 0 < (a.trip_distance == 0).mean() < 0.05  # a few bad records to filter


def test_pipeline_on_the_cluster_matches_pandas(tmp_path: Path) -> None:
    with cumulo.connect(workers=2, threads_per_worker=1) as cluster:
        out = datasets.taxi(tmp_path / "trips", rows=60_000, partitions=6, seed=1, client=cluster.client)
        assert sorted(p.name for p in out.iterdir()) == [f"part.{i:05d}.parquet" for i in range(6)]
        result = pipeline.run(out)

    trips = pd.concat(pd.read_parquet(p) for p in sorted(out.iterdir()))
    assert result.rows_in == len(trips) == 60_000
    kept = trips[(trips.trip_distance > 0) & (trips.fare_amount > 0)]
    assert result.rows_kept == len(kept)
    joined = kept.merge(datasets.zones(), left_on="pickup_zone", right_on="zone_id")
    expected = joined.groupby(["borough", joined.pickup_datetime.dt.hour.rename("hour")]).fare_amount.agg(
        ["count", "mean"]
    )
    got = result.by_borough_hour
    assert got.trips.sum() == len(joined)
    pd.testing.assert_series_equal(got.trips.astype("int64"), expected["count"].astype("int64"), check_names=False,
                                   check_index_type=False)
    pd.testing.assert_series_equal(got.mean_fare, expected["mean"], check_names=False, rtol=1e-9,
                                   check_index_type=False)
    windows = kept.groupby(kept.pickup_datetime.dt.floor("1h")).total_amount.sum()
    pd.testing.assert_series_equal(result.hourly_windows.revenue, windows, check_names=False, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"rows": 0}, "rows=0"), ({"rows": 10, "partitions": 20}, "exceeds rows"), ({"partitions": -1}, "partitions=-1")],
)
def test_bad_dataset_sizes(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        datasets.taxi(tmp_path / "x", **kwargs)


def test_refuses_to_mix_with_existing_files(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(SpecError, match="not empty"):
        datasets.taxi(tmp_path, rows=10, partitions=1)
    assert (tmp_path / "old.txt").read_text() == "keep me"


def test_data_generation_needs_no_cumulo_on_workers(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from .conftest import DaskProcesses, wait_for_workers

    procs = DaskProcesses(tmp_path, workers=0)
    worker = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; sys.modules['cumulo'] = None\n"  # this worker cannot import cumulo
         "from distributed.cli.dask_worker import main\n"
         f"sys.argv = ['dask-worker', '{procs.address}', '--host', '127.0.0.1', '--nthreads', '1', "
         "'--no-nanny', '--no-dashboard']\nmain()\n"],
        env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    procs.workers.append(worker)
    try:
        wait_for_workers(procs.address, 1)
        with cumulo.connect(procs.address) as cluster:
            assert cluster.client.run(lambda: sys.modules.get("cumulo", "absent") is None) == {
                a: True for a in cluster.client.scheduler_info()["workers"]
            }
            out = datasets.taxi(tmp_path / "trips", rows=5000, partitions=2, seed=2, client=cluster.client)
        assert sum(len(pd.read_parquet(p)) for p in out.iterdir()) == 5000
        pd.testing.assert_frame_equal(pd.read_parquet(out / "part.00000.parquet"),
                                      datasets.taxi_partition(2500, 2 * 1_000_003))
    finally:
        procs.stop()
