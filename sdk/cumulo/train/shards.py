"""Data by rank: :func:`by_rank` marks a dask collection, and each rank gets its own block of partitions.

A marked argument of :func:`cumulo.train.torch` is replaced, on rank ``r``, by a contiguous
block of about ``npartitions / world_size`` partitions computed on rank r's own worker
(:func:`shard_futures`), so that no rank's data crosses the network to reach it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distributed import Client

from .._workers import WorkerInfo
from ..exceptions import SpecError


@dataclass(frozen=True)
class RankShards:
    """A dask collection to be split by rank; see :func:`by_rank`."""

    collection: Any


def by_rank(collection: Any) -> RankShards:
    """Mark a dask dataframe (or other collection with partitions) to be split across ranks.

    Passed as an argument to :func:`torch`, rank ``r`` receives, in place of the
    marker, the concatenation of a contiguous block of partitions (about
    ``npartitions / world_size`` of them) computed *on rank r's own worker*, as a
    pandas (or cudf) frame. A rank with no partition gets an empty frame.
    """
    if not hasattr(collection, "partitions") or not hasattr(collection, "npartitions"):
        raise SpecError(
            f"by_rank needs a dask collection with partitions (e.g. a dask DataFrame), "
            f"got {type(collection).__name__}."
        )
    return RankShards(collection)


def shard_futures(client: Client, shards: RankShards, infos: Sequence[WorkerInfo]) -> list[Any]:
    """Per rank, a future of its block of partitions computed on its own worker (an empty frame when none)."""
    coll = shards.collection
    world = len(infos)
    n = coll.npartitions
    out: list[Any] = []
    for rank, info in enumerate(infos):
        lo, hi = rank * n // world, (rank + 1) * n // world
        if lo == hi:
            out.append(coll._meta)
        else:
            part = coll.partitions[lo:hi]
            out.append(client.compute(part, workers=[info.address], allow_other_workers=False))
    return out
