"""The demo pipeline: a real dataframe job over the synthetic taxi trips.

Written once against dask.dataframe, it runs on pandas or cuDF partitions
depending on ``dataframe.backend`` (which connect() sets from the workers):
read Parquet, filter bad records, derive columns, join with the zone table,
group-by-aggregate per borough and hour of day, and count trips and revenue
in one-hour time windows. The benchmark runs the same function through cumulo
and through raw dask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd

from .datasets import zones

__all__ = ["PipelineResult", "build", "run", "transform"]


@dataclass
class PipelineResult:
    """The demo's outputs, as pandas frames (moved off the GPU when the backend is cudf)."""

    by_borough_hour: pd.DataFrame
    hourly_windows: pd.DataFrame
    rows_in: int
    rows_kept: int


def _to_pandas(frame: Any) -> pd.DataFrame:
    return frame.to_pandas() if hasattr(frame, "to_pandas") else frame


def transform(trips: Any, zone_table: Any) -> dict[str, Any]:
    """The pipeline's steps on a trips frame and the zone table.

    Written against the API pandas and dask.dataframe share, so the same steps
    run lazily on a cluster (dask, pandas or cuDF partitions) and eagerly in
    plain pandas (the benchmark's one-core baseline).
    """
    kept = trips[(trips.trip_distance > 0) & (trips.fare_amount > 0)]
    kept = kept.assign(
        hour=kept.pickup_datetime.dt.hour,
        tip_fraction=kept.tip_amount / kept.fare_amount,
        minutes=(kept.dropoff_datetime - kept.pickup_datetime).dt.total_seconds() / 60.0,
        window=kept.pickup_datetime.dt.floor("1h"),
    )
    joined = kept.merge(zone_table, left_on="pickup_zone", right_on="zone_id", how="inner")
    by_borough_hour = joined.groupby(["borough", "hour"]).agg(
        trips=("fare_amount", "count"),
        mean_fare=("fare_amount", "mean"),
        mean_tip_fraction=("tip_fraction", "mean"),
        total_distance=("trip_distance", "sum"),
        mean_minutes=("minutes", "mean"),
    )
    hourly = kept.groupby("window").agg(trips=("fare_amount", "count"), revenue=("total_amount", "sum"))
    return {
        "by_borough_hour": by_borough_hour,
        "hourly_windows": hourly,
        "rows_in": trips.shape[0],
        "rows_kept": kept.shape[0],
    }


def build(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The lazy dask collections of the pipeline over the Parquet files at ``path`` (nothing is computed)."""
    trips = dd.read_parquet(str(path))
    # from_dict follows dataframe.backend (cudf on GPU workers); it widens ints, so restore the key's dtype
    zone_table = dd.from_dict(zones().to_dict(orient="list"), npartitions=1).astype({"zone_id": "int32"})
    return transform(trips, zone_table)


def run(path: str | os.PathLike[str]) -> PipelineResult:
    """Compute the pipeline on the current dask scheduler (one graph, shared reads)."""
    parts = build(path)
    by_bh, hourly, rows_in, rows_kept = dask.compute(
        parts["by_borough_hour"], parts["hourly_windows"], parts["rows_in"], parts["rows_kept"]
    )
    return PipelineResult(
        by_borough_hour=_to_pandas(by_bh).sort_index(),
        hourly_windows=_to_pandas(hourly).sort_index(),
        rows_in=int(rows_in),
        rows_kept=int(rows_kept),
    )
