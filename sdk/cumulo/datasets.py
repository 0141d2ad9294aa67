"""Synthetic, seeded data for the examples, written in parallel on the cluster.

``taxi(path, rows=...)`` makes a taxi-trips-like table (pickup/dropoff times,
zones, distances, fares, tips, payment types) straight to partitioned Parquet:
each partition is generated and written by a task on a worker, from its own
seed, so the data set is the same for the same arguments on any cluster and
needs no download. ``zones()`` is the small lookup table the demo joins with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .exceptions import SpecError

__all__ = ["N_ZONES", "PAYMENT_TYPES", "taxi", "taxi_partition", "zones"]

N_ZONES = 120
BOROUGHS = ("Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR")
PAYMENT_TYPES = ("card", "cash", "no charge", "dispute")
_START = pd.Timestamp("2026-01-01")
_SPAN_SECONDS = 31 * 24 * 3600
#: Above this many rows a request is almost surely a typo (about 400 GB of Parquet).
MAX_ROWS = 10_000_000_000


def zones() -> pd.DataFrame:
    """The zone lookup table: zone_id, borough, zone (deterministic, N_ZONES rows)."""
    rng = np.random.default_rng(20260101)
    weights = np.array([0.45, 0.2, 0.2, 0.1, 0.04, 0.01])
    borough = rng.choice(len(BOROUGHS), size=N_ZONES, p=weights)
    return pd.DataFrame(
        {
            "zone_id": np.arange(1, N_ZONES + 1, dtype="int32"),
            "borough": [BOROUGHS[b] for b in borough],
            "zone": [f"zone-{i:03d}" for i in range(1, N_ZONES + 1)],
        }
    )


def taxi_partition(rows: int, seed: int) -> pd.DataFrame:
    """One partition of trips from its own seed (pure: same arguments, same frame)."""
    rng = np.random.default_rng(seed)
    pickup = _START + pd.to_timedelta(rng.integers(0, _SPAN_SECONDS, size=rows), unit="s")
    distance = np.round(rng.gamma(shape=2.0, scale=1.6, size=rows), 2)
    minutes = np.maximum(1.0, distance * rng.uniform(2.0, 6.0, size=rows))
    fare = np.round(3.0 + 2.5 * distance + 0.5 * minutes, 2)
    payment = rng.choice(len(PAYMENT_TYPES), size=rows, p=[0.7, 0.26, 0.03, 0.01])
    tip = np.where(payment == 0, np.round(fare * rng.uniform(0.0, 0.3, size=rows), 2), 0.0)
    # a few bad records, as real trip data has: zero distance and negative fares
    bad = rng.random(rows) < 0.01
    distance = np.where(bad, 0.0, distance)
    fare = np.where(rng.random(rows) < 0.002, -fare, fare)
    return pd.DataFrame(
        {
            "pickup_datetime": pickup,
            "dropoff_datetime": pickup + pd.to_timedelta(minutes * 60, unit="s").round("s"),
            "pickup_zone": rng.integers(1, N_ZONES + 1, size=rows).astype("int32"),
            "dropoff_zone": rng.integers(1, N_ZONES + 1, size=rows).astype("int32"),
            "passenger_count": rng.integers(1, 7, size=rows).astype("int8"),
            "trip_distance": distance,
            "fare_amount": fare,
            "tip_amount": tip,
            "payment_type": pd.Categorical.from_codes(payment, categories=list(PAYMENT_TYPES)),
            "total_amount": np.round(fare + tip, 2),
        }
    )


def _write_partition(path: str, index: int, rows: int, seed: int) -> int:
    frame = taxi_partition(rows, seed)
    frame.to_parquet(os.path.join(path, f"part.{index:05d}.parquet"), index=False)
    return rows


# The partition writer runs on workers, which need not have cumulo installed (a
# cloud image, a team's cluster). Dask pickles task functions by reference, so
# the writer travels as cloudpickle bytes of this module's functions by value,
# and workers only need cloudpickle (a dependency of distributed) to load it.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
_WRITER = cloudpickle.dumps(_write_partition)


def taxi(
    path: str | os.PathLike[str],
    *,
    rows: int = 1_000_000,
    partitions: int = 8,
    seed: int = 0,
    client: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write ``rows`` synthetic trips as ``partitions`` Parquet files under ``path``, in parallel.

    Runs on ``client`` (default: the current dask client, else dask's local
    scheduler). The path must be visible to every worker (a local directory for
    a local cluster; shared storage or object store paths elsewhere).
    """
    for label, value, top in (("rows", rows, MAX_ROWS), ("partitions", partitions, 100_000)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise SpecError(f"{label}={value!r} must be a whole number between 1 and {top}")
    if partitions > rows:
        raise SpecError(f"partitions={partitions} exceeds rows={rows}: ask for at most {rows} partitions")
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SpecError(f"{out} is not empty; pass overwrite=True or choose an empty directory")
        for old in out.glob("part.*.parquet"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    import dask

    base, extra = divmod(rows, partitions)
    writer = dask.delayed(cloudpickle.loads, pure=True)(_WRITER)
    tasks = [writer(str(out), i, base + (1 if i < extra else 0), seed * 1_000_003 + i) for i in range(partitions)]
    if client is not None:
        written = client.gather(client.compute(tasks))
    else:
        written = dask.compute(*tasks)
    assert sum(written) == rows
    return out
