"""The GPU path: the same calls as the CPU tests, on CUDA workers with the cudf backend."""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

import cumulo
from cumulo import datasets, pipeline

pytestmark = pytest.mark.gpu


def test_default_cluster_uses_cuda_workers_and_cudf() -> None:
    from distributed.diagnostics import nvml

    with cumulo.connect() as cluster:
        assert cluster.backend == "cudf"
        assert dask.config.get("dataframe.backend") == "cudf"
        info = cluster.info()
        assert info["gpus"] == nvml.device_get_count() == info["workers"]
        assert info["gpu_model"]
        assert "GPUs" in cluster._repr_html_() and info["gpu_model"] in cluster._repr_html_()
    assert dask.config.get("dataframe.backend") == "pandas"


def test_pipeline_on_gpu_matches_cpu(tmp_path: Path) -> None:
    with cumulo.connect() as cluster:
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
