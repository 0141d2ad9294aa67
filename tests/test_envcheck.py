"""The environment check: versions and GPUs probed on every side, mismatches shown as a table."""

from __future__ import annotations

import logging
import platform
import subprocess
import sysconfig
import warnings
from pathlib import Path

import pytest
from distributed.versions import VersionMismatchWarning as DistributedVersionWarning
from distributed.versions import error_message

import cumulo
from cumulo.envsync import envcheck
from cumulo.envsync.envcheck import ClusterFacts, VersionMismatchWarning, mismatch_table, mismatches
from cumulo.exceptions import VersionMismatch

from .conftest import DaskProcesses, wait_for_workers


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


def test_probe_reads_the_same_versions_as_importlib_metadata(tmp_path: Path) -> None:
    """The probe reads ``Version:`` from the metadata header alone: the same value as
    ``importlib.metadata.version`` for every installed distribution, and for odd files."""
    from importlib import metadata

    from cumulo.envsync import _probe

    dists = list(metadata.distributions())
    assert len(dists) > 50
    for dist in dists:
        assert _probe._header_version(dist) == dist.version, dist.metadata["Name"]
    for text, expected in [
        ("Metadata-Version: 2.1\nName: x\nVersion:  1.2.3 \nSummary: s\n\nVersion: 9\n", "1.2.3"),
        ("Metadata-Version: 2.1\nName: x\nSummary: s\n\nVersion: 9\n", None),  # only in the body: not it
        ("Name: x\nSummary: a\n  Version: 9\nVersion: 4.0\n", "4.0"),  # a continuation line is not a field
    ]:
        folder = tmp_path / f"x{len(text)}.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(text)
        assert _probe._header_version(metadata.PathDistribution(folder)) == expected
    assert _probe._version("dask") == metadata.version("dask")
    assert _probe._version("no-such-package-here") is None


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


# -- a python patch release is not a mismatch, in distributed's check either (issue 21) ------------


def _distributed_warning(client: str, scheduler: str, workers: list[str], **others: tuple[str, str]) -> str:
    """The text distributed's own check warns with, for these python versions (and other packages)."""
    def side(python: str, which: int) -> dict:
        return {"packages": {"python": f"{python}.final.0", "dask": "2026.7.1",
                             **{k: v[which] for k, v in others.items()}}}
    return error_message(side(scheduler, 1), {f"w{i}": side(w, 1) for i, w in enumerate(workers)},
                         side(client, 0))["warning"]


def _shown(text: str) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        envcheck.quiet_patch_level_warnings()  # as connect() does before it connects
        warnings.filterwarnings("always", append=True)  # after cumulo's filter, which stays first
        warnings.warn(DistributedVersionWarning(text))
    return bool(seen)


def test_distributeds_table_of_a_python_patch_difference_alone_is_quiet() -> None:
    here = platform.python_version_tuple()
    same, other = f"{here[0]}.{here[1]}.2", f"{here[0]}.{here[1]}.7"
    assert not _shown(_distributed_warning(other, same, [same]))
    assert not _shown(_distributed_warning(other, same, [same, other]))  # workers on two patch releases
    assert not _shown(_distributed_warning(other, same, []))  # no workers yet
    # real mismatches still show: another minor release, or another package beside python
    assert _shown(_distributed_warning(other, f"{here[0]}.{int(here[1]) + 1}.0", [same]))
    assert _shown(_distributed_warning(other, same, [same], pandas=("3.0.6", "3.0.5")))


def test_patch_differences_are_informational(caplog: pytest.LogCaptureFixture) -> None:
    facts = ClusterFacts(client=_side(), scheduler=_side(python="3.11.2"), workers={"w": _side(python="3.11.2")})
    assert envcheck.patch_differences(facts) == {"python": {"3.11.7": {"client"}, "3.11.2": {"scheduler", "worker w"}}}
    caplog.set_level(logging.INFO, logger="cumulo.envsync.envcheck")
    envcheck.check(facts, policy="raise")  # no VersionMismatch: a patch release round-trips
    assert "python differs only at patch level" in caplog.text and "3.11.2" in caplog.text
    minor = ClusterFacts(client=_side(), scheduler=_side(python="3.12.1"), workers={})
    assert envcheck.patch_differences(minor) == {}
    with pytest.raises(VersionMismatch, match="python"):
        envcheck.check(minor, policy="raise")


def test_a_cluster_on_another_patch_release_of_python_connects_quietly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A scheduler and worker on Debian's /usr/bin/python3 (3.11.2 here) with this environment's packages:
    neither distributed's warning nor cumulo's gate, one INFO line."""
    other = Path("/usr/bin/python3")
    if not other.exists():
        pytest.skip("needs a system Python beside this environment's")
    probe = subprocess.run([str(other), "-c", "import platform; print(platform.python_version())"],
                           capture_output=True, text=True, timeout=30)
    version = probe.stdout.strip()
    here = platform.python_version_tuple()[:2]
    if version == platform.python_version() or tuple(version.split(".")[:2]) != here:
        pytest.skip(f"needs another patch release of Python {platform.python_version()}, found {version or 'none'}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dask = bin_dir / "dask"  # that interpreter running this environment's dask (same ABI: same minor release)
    dask.write_text(f'#!/bin/sh\nPYTHONPATH="{sysconfig.get_paths()["purelib"]}" exec {other} -m dask "$@"\n')
    dask.chmod(0o755)
    procs = DaskProcesses(tmp_path, workers=1, bin_dir=bin_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DistributedVersionWarning)  # conftest's own client, not cumulo's
            wait_for_workers(procs.address, 1)
        caplog.set_level(logging.INFO, logger="cumulo.envsync.envcheck")
        with warnings.catch_warnings(record=True) as seen:
            warnings.filterwarnings("always", append=True)
            with cumulo.connect(procs.address, name="patch") as cluster:
                assert cluster.facts is not None
                assert {w["versions"]["python"] for w in cluster.facts.workers.values()} == {version}
                assert cluster.client.submit(sum, [1, 2]).result() == 3
        assert [str(w.message) for w in seen if "Mismatched versions" in str(w.message)] == []
        assert "python differs only at patch level" in caplog.text and version in caplog.text
    finally:
        procs.stop()
