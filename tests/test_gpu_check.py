"""The GPU check kit (scripts/gpu-check) on a machine without a GPU: fast, offline, nothing installed.

The run itself needs an NVIDIA GPU and is exercised on one (docs/gpu-check.md); here we check that the
dry run explains the five steps, that a real run refuses clearly without a GPU, that the size check
refuses a wheelhouse a device run cannot carry, and the small pieces the run leans on.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check"
MIB = 1024 * 1024


def _load_kit():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


kit = _load_kit()


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(ROOT))


def _no_gpu_here() -> None:
    gpus, _ = kit.find_gpus()
    if gpus:
        pytest.skip("this machine has an NVIDIA GPU: the refusal is for machines without one")


def test_the_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)


def test_dry_run_exits_0_and_names_the_five_steps(tmp_path: Path) -> None:
    res = _run("--dry-run", "--wheelhouse", str(tmp_path / "absent"), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for i, name in enumerate(("connect", "ledger", "train", "tests", "bench"), 1):
        assert f"  {i}. {name} (at most " in out, out
    for words in ("LocalCUDACluster", "NVML utilisation", "idle guard", "NCCL", "pytest -m gpu", "CuPy", "NumPy"):
        assert words in out, words
    assert "absent: build it first with `scripts/gpu-check --prepare`" in out
    assert "report.md" in out and "results.json" in out
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


def test_dry_run_describes_a_present_wheelhouse(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    wh.mkdir()
    (wh / "dask-2026.7.1-py3-none-any.whl").write_bytes(b"\0" * (2 * MIB))
    (wh / kit.MANIFEST).write_text(
        '{"wheels": [{"file": "dask-2026.7.1-py3-none-any.whl"}], "created": "2026-12-01 12:00:00 UTC", '
        '"python_version": "3.12", "prepare_seconds": 26.0, "cumulo_sources": "x"}')
    res = _run("--dry-run", "--wheelhouse", str(wh))
    assert res.returncode == 0, res.stderr
    assert "1 wheels, 2.0 MiB" in res.stdout and "for Python 3.12" in res.stdout
    assert "sdk/cumulo changed since its wheel was built" in res.stdout


def test_a_run_without_a_gpu_refuses_and_points_at_the_dry_run(tmp_path: Path) -> None:
    _no_gpu_here()
    res = _run("--wheelhouse", str(tmp_path / "wh"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "no NVIDIA GPU found" in res.stderr and "--dry-run" in res.stderr
    assert not (tmp_path / "out").exists(), "a refused run installs and writes nothing"


def test_the_size_check_refuses_a_wheelhouse_over_the_limit(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    (wh / "sub").mkdir(parents=True)
    with open(wh / "big-1.0-py3-none-any.whl", "wb") as f:  # sparse: 60 MiB of size, no real disk use
        f.truncate(60 * MIB)
    (wh / "sub" / "small.whl").write_bytes(b"x" * MIB)
    assert kit.check_size(wh) == 61 * MIB
    with pytest.raises(kit.SizeError, match=r"61\.0 MiB plus the working tree's 4\.0 MiB, over the 64\.0 MiB"):
        kit.check_size(wh, other=4 * MIB)
    with open(wh / "more.whl", "wb") as f:
        f.truncate(4 * MIB)
    with pytest.raises(kit.SizeError, match="65.0 MiB, over the 64.0 MiB a device run can carry"):
        kit.check_size(wh)
    assert kit.check_size(tmp_path / "missing") == 0


def test_requirements_follow_the_project_pins() -> None:
    reqs = kit.requirements()
    names = [kit._name(r) for r in reqs]
    assert "dask[dataframe,array]>=2026.7.1,<2026.7.2" in reqs
    assert "distributed>=2026.7.1,<2026.7.2" in reqs
    assert any(r.startswith("dask-cuda>=26.10") and "[" not in r for r in reqs), "no CUDA 12 extra"
    assert "cuda-bindings>=13,<14" in reqs
    assert {"pytest", "pytest-timeout", "psutil", "cryptography", "pyyaml"} <= set(names)
    assert "ipywidgets" not in names


def test_gpu_test_files_and_the_junit_reader(tmp_path: Path) -> None:
    files = kit.gpu_test_files()
    assert "tests/test_gpu.py" in files and "tests/test_magic.py" in files
    # this file and test_require_all.py hold gpu-marked tests only inside strings, as samples: not gpu tests
    assert "tests/test_gpu_check.py" not in files and "tests/test_require_all.py" not in files
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_gpu" name="test_a"/>'
        '<testcase classname="tests.test_gpu" name="test_b"><skipped message="needs cudf, not installed"/></testcase>'
        '<testcase classname="tests.test_train" name="test_c"><failure message="assert 1 == 2">tb</failure></testcase>'
        '<testcase classname="tests.test_magic" name=""><error message="ModuleNotFoundError: No module named '
        "'nbclient'\"/></testcase></testsuite></testsuites>")
    rows = kit.parse_junit(xml)
    assert [r["outcome"] for r in rows] == ["passed", "skipped", "failed", "error"]
    assert rows[1]["message"] == "needs cudf, not installed" and rows[2]["test"] == "tests.test_train::test_c"


def _item(*marked: str) -> SimpleNamespace:
    item = SimpleNamespace(markers=[])
    item.get_closest_marker = lambda name: object() if name in marked else None
    item.add_marker = item.markers.append
    return item


def test_the_pytest_plugin_skips_by_the_cudf_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    for installed, skipped in ((set(), "cudf, dask_cudf"), ({"cudf"}, "dask_cudf"), ({"cudf", "dask_cudf"}, None)):
        monkeypatch.setattr(kit, "_importable", lambda module, installed=installed: module in installed)
        needs_cudf, gpu_only, plain = _item("gpu", "cudf"), _item("gpu"), _item()
        kit.pytest_collection_modifyitems(None, [needs_cudf, gpu_only, plain])
        if skipped is None:
            assert needs_cudf.markers == [], installed
        else:
            (mark,) = needs_cudf.markers
            assert mark.name == "skip" and mark.kwargs["reason"] == (
                f"needs {skipped}, not installed on this machine: not tested"), installed
        assert gpu_only.markers == [] and plain.markers == [], installed


SAMPLE_GPU_TESTS = '''
import pytest

pytestmark = pytest.mark.gpu


def test_one_cuda_worker_per_gpu():
    import os
    backend = "cudf" if os.environ.get("NO_SUCH_VARIABLE") else "pandas"  # names cuDF, needs none of it
    assert backend == "pandas"


@pytest.mark.cudf
def test_cudf_on_the_workers():
    pass
'''


def test_the_kit_runs_a_gpu_test_that_names_cudf_and_skips_one_marked_cudf(tmp_path: Path) -> None:
    """The plugin as the tests step loads it (-p gpu_check, -m gpu), on real pytest items: by marker, not source."""
    (tmp_path / "test_sample.py").write_text(SAMPLE_GPU_TESTS)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CUMULO_TEST_REQUIRE_ALL", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "scripts"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "gpu_check", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-o", "markers=gpu: a GPU\ncudf: cuDF", "--rootdir", str(tmp_path), "-rA", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "PASSED test_sample.py::test_one_cuda_worker_per_gpu" in out, out
    if kit._importable("cudf") and kit._importable("dask_cudf"):
        assert "PASSED test_sample.py::test_cudf_on_the_workers" in out, out
    else:
        assert "PASSED test_sample.py::test_cudf_on_the_workers" not in out, out
        assert "needs cudf, dask_cudf, not installed on this machine: not tested" in out, out


def test_the_default_cluster_check_needs_no_cudf_and_the_cudf_checks_say_so() -> None:
    """The suite's own markers: what the kit runs on a GPU machine that has dask-cuda but no cuDF."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-m", "gpu and not cudf", "tests/test_gpu.py", "tests/test_lambda_env.py"],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT / "sdk")})
    assert res.returncode == 0, res.stdout + res.stderr
    selected = {line.split("::")[-1] for line in res.stdout.splitlines() if "::" in line}
    assert "test_default_cluster_gets_one_cuda_worker_per_gpu" in selected, res.stdout
    assert "test_asking_for_more_workers_than_gpus_is_refused" in selected, res.stdout
    assert not {"test_default_cluster_uses_the_cudf_backend", "test_pipeline_on_gpu_matches_cpu",
                "test_the_gpu_lock_resolves_and_cudf_computes_on_the_gpu_workers"} & selected, res.stdout
