"""ETL on the cluster: read Parquet, filter, derive, join, group, window, write Parquet.

    python examples/dataframes.py [--rows 300000] [--partitions 6]

The same code runs on pandas partitions here and on cuDF partitions when the workers have GPUs:
cumulo.connect() sets dask's dataframe backend to match the workers, and everything below goes
through dask.dataframe (and the backend-neutral ``dd.from_dict`` for the small zone table).
The notebook notebooks/dataframes.ipynb walks through the same steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask
import dask.dataframe as dd

import cumulo
from cumulo import datasets, pipeline


def local(frame):  # type: ignore[no-untyped-def]
    """A computed result as pandas, wherever it was computed (cuDF frames have to_pandas())."""
    return frame.to_pandas() if hasattr(frame, "to_pandas") else frame


def zone_table(prefix: str = "") -> dd.DataFrame:
    """The zone lookup table as a one-partition dask frame on the cluster's backend."""
    zones = datasets.zones().rename(columns=lambda c: f"{prefix}{c}" if prefix else c)
    key = f"{prefix}zone_id"
    return dd.from_dict(zones.to_dict(orient="list"), npartitions=1).astype({key: "int32"})


def etl(raw: Path, out: Path) -> dict:
    """The whole job; returns its small results as pandas frames and numbers."""
    trips = dd.read_parquet(str(raw))

    # 1. filter bad records (zero distances, negative fares) and derive columns
    clean = trips[(trips.trip_distance > 0) & (trips.fare_amount > 0)]
    clean = clean.assign(
        minutes=(clean.dropoff_datetime - clean.pickup_datetime).dt.total_seconds() / 60.0,
        tip_fraction=clean.tip_amount / clean.fare_amount,
        hour=clean.pickup_datetime.dt.hour,
        window=clean.pickup_datetime.dt.floor("1h"),
    )

    # 2. join: pickup borough, then dropoff borough (two merges with the small zone table)
    joined = clean.merge(zone_table(), left_on="pickup_zone", right_on="zone_id", how="inner")
    joined = joined.merge(zone_table("dropoff_"), left_on="dropoff_zone", right_on="dropoff_zone_id", how="inner")
    joined = joined.persist()  # kept in the workers' memory: the steps below all read it

    # 3. group-by aggregations
    by_borough = joined.groupby("borough").agg(
        trips=("fare_amount", "count"), mean_fare=("fare_amount", "mean"),
        mean_tip_fraction=("tip_fraction", "mean"), mean_minutes=("minutes", "mean"))
    flows = joined.groupby(["borough", "dropoff_borough"]).size()
    by_borough_hour = joined.groupby(["borough", "hour"]).agg(trips=("fare_amount", "count"),
                                                               mean_fare=("fare_amount", "mean"))

    # 4. time windows: one-hour tumbling windows (trips, revenue)
    hourly = joined.groupby("window").agg(trips=("fare_amount", "count"), revenue=("total_amount", "sum"))

    by_borough, flows, by_borough_hour, hourly, rows_in, rows_kept = dask.compute(
        by_borough, flows, by_borough_hour, hourly, trips.shape[0], joined.shape[0])
    hourly = local(hourly).sort_index()
    # ... and a 3-hour rolling mean over them (a small frame now: plain pandas)
    hourly["trips_3h_mean"] = hourly["trips"].rolling(3, min_periods=1).mean()

    # 5. write Parquet: the cleaned, joined trips partitioned by borough, and the aggregate
    columns = ["pickup_datetime", "borough", "dropoff_borough", "trip_distance", "minutes", "fare_amount",
               "tip_fraction", "total_amount"]
    joined[columns].to_parquet(str(out / "trips"), partition_on=["borough"], write_index=False)
    local(by_borough_hour).reset_index().to_parquet(out / "by_borough_hour.parquet", index=False)
    written = dd.read_parquet(str(out / "trips"))
    return {
        "rows_in": int(rows_in), "rows_kept": int(rows_kept),
        "by_borough": local(by_borough).sort_values("trips", ascending=False),
        "flows": local(flows).unstack(fill_value=0),
        "hourly": hourly,
        "written_rows": int(written.shape[0].compute()),
        "partitions": sorted(p.name for p in (out / "trips").iterdir() if p.is_dir()),
    }


def main(rows: int = 300_000, partitions: int = 6) -> None:
    with cumulo.connect("local", name="dataframes") as cluster, \
            tempfile.TemporaryDirectory(prefix="cumulo-etl-") as tmp:
        print(f"cluster {cluster.name}: {cluster.info()['workers']} workers, backend {cluster.backend}")
        raw, out = Path(tmp) / "raw", Path(tmp) / "out"
        out.mkdir()
        t0 = time.perf_counter()
        datasets.taxi(raw, rows=rows, partitions=partitions, client=cluster.client)
        print(f"generated {rows:,} trips in {partitions} Parquet files ({time.perf_counter() - t0:.2f}s)")
        t0 = time.perf_counter()
        result = etl(raw, out)
        print(f"ETL in {time.perf_counter() - t0:.2f}s: kept {result['rows_kept']:,} of {result['rows_in']:,} trips")
        print("\nby pickup borough:")
        print(result["by_borough"].round(3).to_string())
        print("\nbusiest one-hour windows:")
        print(result["hourly"].sort_values("trips", ascending=False).head(3).round(1).to_string())
        print(f"\nwrote {result['written_rows']:,} rows to Parquet, partitioned by borough: "
              f"{', '.join(result['partitions'])}")
        check = pipeline.run(raw)  # cumulo's demo pipeline filters the same way: the counts agree
        assert check.rows_kept == result["rows_kept"] == result["written_rows"]
        print(cluster.usage)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    main(args.rows, args.partitions)
