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
    assert "tests/test_gpu.py" in files and "tests/test_gpu_check.py" not in files
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


def test_the_pytest_plugin_skips_gpu_tests_that_need_what_is_missing() -> None:
    def needs_cudf():
        import cudf  # noqa: F401

    def needs_nothing_missing():
        import os  # noqa: F401

    def not_a_gpu_test():
        import xgboost  # noqa: F401

    items = []
    for fn, gpu in ((needs_cudf, True), (needs_nothing_missing, True), (not_a_gpu_test, False)):
        item = SimpleNamespace(function=fn, markers=[])
        item.get_closest_marker = lambda name, gpu=gpu: object() if gpu and name == "gpu" else None
        item.add_marker = item.markers.append
        items.append(item)
    kit.pytest_collection_modifyitems(None, items)
    if importlib.util.find_spec("cudf") is None:
        assert len(items[0].markers) == 1 and "needs cudf" in items[0].markers[0].kwargs["reason"]
    assert items[1].markers == [] and items[2].markers == []
