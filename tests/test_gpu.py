"""The GPU path: the same calls as the CPU tests, on CUDA workers (and the cudf backend where cuDF is installed)."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import pytest

import cumulo
from cumulo import datasets, pipeline

pytestmark = pytest.mark.gpu


def _first_visible_device() -> str | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if visible is None else visible.split(",")[0].strip()


def test_default_cluster_gets_one_cuda_worker_per_gpu() -> None:
    """Needs no cuDF: the kit runs it on a GPU machine that has only dask-cuda."""
    from distributed.diagnostics import nvml

    n = nvml.device_get_count()
    with cumulo.connect() as cluster:
        info = cluster.info()
        assert info["gpus"] == n == info["workers"]
        assert info["gpu_model"]
        assert "GPUs" in cluster._repr_html_() and info["gpu_model"] in cluster._repr_html_()
        # dask-cuda pins each worker to a GPU of its own: the first device it lists, a different one per worker
        firsts = sorted(cluster.client.run(_first_visible_device).values())
        assert firsts == [str(i) for i in range(n)], firsts


@pytest.mark.cudf
def test_default_cluster_uses_the_cudf_backend() -> None:
    with cumulo.connect() as cluster:
        assert cluster.backend == "cudf"
        assert dask.config.get("dataframe.backend") == "cudf"
    assert dask.config.get("dataframe.backend") == "pandas"


@pytest.mark.cudf
def test_pipeline_on_gpu_matches_cpu(tmp_path: Path) -> None:
    with cumulo.connect() as cluster:
        assert cluster.backend == "cudf"
        path = datasets.taxi(tmp_path / "trips", rows=200_000, partitions=4, client=cluster.client)
        on_gpu = pipeline.run(path)
    with dask.config.set({"dataframe.backend": "pandas", "scheduler": "sync"}):
        on_cpu = pipeline.run(path)
    assert on_gpu.rows_kept == on_cpu.rows_kept
    assert (on_gpu.by_borough_hour.trips.values == on_cpu.by_borough_hour.trips.values).all()


def test_asking_for_more_workers_than_gpus_is_refused() -> None:
    from distributed.diagnostics import nvml

    with pytest.raises(cumulo.exceptions.SpecError, match="needs a GPU of its own"):
        cumulo.connect(workers=nvml.device_get_count() + 1)
