"""The environment check: versions and GPUs probed on every side, mismatches shown as a table."""

from __future__ import annotations

import warnings

import pytest

import cumulo
from cumulo import envcheck
from cumulo.envcheck import ClusterFacts, VersionMismatchWarning, mismatch_table, mismatches
from cumulo.exceptions import VersionMismatch


def _side(dask: str = "2026.7.1", python: str = "3.11.7", cudf: str | None = None, gpus: int = 0) -> dict:
    return {
        "versions": {"python": python, "dask": dask, "distributed": dask, "cudf": cudf, "cumulo": "0.1.0"},
        "gpus": [{"index": i, "name": "NVIDIA H100 80GB HBM3", "memory": 80 << 30} for i in range(gpus)],
    }


def test_real_probe_on_a_local_cluster_agrees() -> None:
    with cumulo.connect(workers=2, threads_per_worker=1) as cluster:
        facts = cluster.facts
        assert facts is not None and len(facts.workers) == 2
        assert facts.client["versions"]["dask"] == facts.scheduler["versions"]["dask"]
        assert all(w["versions"]["cumulo"] == cumulo.__version__ for w in facts.workers.values())
        assert mismatches(facts) == {}
        assert facts.gpus == 0 and facts.backend == "pandas"


def test_mismatch_table_names_each_side() -> None:
    facts = ClusterFacts(
        client=_side(), scheduler=_side(),
        workers={"tcp://a:1": _side(dask="2026.8.0"), "tcp://b:1": _side(dask="2026.8.0"), "tcp://c:1": _side()},
    )
    found = mismatches(facts)
    assert set(found) == {"dask", "distributed"}
    table = mismatch_table(found)
    assert "2026.8.0" in table and "2 workers" in table and "client, scheduler, 1 worker" in table


def test_python_patch_releases_and_absent_packages_are_not_mismatches() -> None:
    worker = _side(python="3.11.9")
    worker["versions"]["cumulo"] = None  # cluster started without cumulo installed
    facts = ClusterFacts(client=_side(), scheduler=_side(), workers={"w": worker})
    assert mismatches(facts) == {}


def test_policy_raise_and_warn() -> None:
    facts = ClusterFacts(client=_side(), scheduler=_side(dask="2026.6.0"), workers={})
    with pytest.raises(VersionMismatch, match="scheduler"):
        envcheck.check(facts, policy="raise")
    with pytest.warns(VersionMismatchWarning, match="different versions"):
        envcheck.check(facts, policy="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        envcheck.check(facts, policy="ignore")


def test_backend_follows_gpu_workers() -> None:
    gpu = ClusterFacts(client=_side(), scheduler=_side(), workers={"w1": _side(cudf="26.10.2", gpus=1),
                                                                   "w2": _side(cudf="26.10.2", gpus=1)})
    assert gpu.backend == "cudf" and gpu.gpus == 2 and gpu.gpu_model == "NVIDIA H100 80GB HBM3"
    no_cudf = ClusterFacts(client=_side(), scheduler=_side(), workers={"w1": _side(gpus=1)})
    assert no_cudf.backend == "pandas"
    mixed = ClusterFacts(client=_side(), scheduler=_side(), workers={"w1": _side(cudf="26.10.2", gpus=1),
                                                                     "w2": _side()})
    assert mixed.backend == "pandas"
