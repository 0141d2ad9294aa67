"""A shared notebook's environment is taken only as far as its recipient allows, and shown before launch.

The notebooks here carry what a careless or hostile author could put under ``metadata.cumulo``: a
``pkg @ file://`` sdist whose build code writes a marker file, index options, version ranges, a
requirements file path. Nothing of that may run or be resolved on the recipient's machine unless
``cumulo.share.allow-requirements`` says so; plain ``name==version`` pins pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import cumulo
from cumulo import envsync
from cumulo.exceptions import ConfigError, SpecError
from cumulo.life.registry import Registry
from cumulo.share import from_notebook, merge_spec_from

from .test_envsync_safety import _sdist_that_runs_code


def shared(tmp_path: Path, spec: dict[str, Any], name: str = "nb.shared.ipynb") -> Path:
    """A notebook as `cumulo share` writes it, carrying ``spec`` for one cluster."""
    meta = {"version": 1, "clusters": [{"name": "etl", "provider": spec.get("provider", "local"),
                                        "workers": spec.get("workers"), "spec": spec, "run": {}}]}
    nb = new_notebook(cells=[new_code_cell("cluster = cumulo.connect(name='etl')")], metadata={"cumulo": meta})
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def test_a_file_url_sdist_in_a_notebook_is_refused_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_OFFLINE", "1")
    marker = tmp_path / "MARKER"
    requirement = f"evilpkg @ {_sdist_that_runs_code(tmp_path, marker).as_uri()}"
    path = shared(tmp_path, {"provider": "lambda", "gpu": "A10", "workers": 1, "environment": [requirement]})
    with pytest.raises(SpecError) as info:
        cumulo.connect(spec_from=path, name="evil")
    text = str(info.value)
    assert repr(requirement) in text and "direct URL, path or VCS requirement" in text
    assert "dask.config.set({'cumulo.share.allow-requirements': 'any'})" in text and "environment=" in text
    with pytest.raises(SpecError, match="direct URL"):
        from_notebook(path)
    assert not marker.exists() and Registry().latest("evil") is None

    # a recipient who trusts the author allows it; the preflight's resolve still never builds it here
    with dask.config.set({"cumulo.share.allow-requirements": "any"}):
        spec = from_notebook(path)
    assert spec.environment == [requirement]
    envsync.check_resolvable(envsync.Lock(python=f"{sys.version_info.major}.{sys.version_info.minor}",
                                          pins=list(spec.environment)))
    assert not marker.exists(), "the preflight resolve ran the notebook author's build code"


@pytest.mark.parametrize("entry", ["--index-url https://packages.example.invalid/simple",
                                   "--extra-index-url=https://packages.example.invalid/simple",
                                   "-f https://packages.example.invalid/wheels", "-e git+https://example.invalid/x"])
def test_index_urls_and_installer_options_never_come_from_a_notebook(tmp_path: Path, entry: str) -> None:
    path = shared(tmp_path, {"provider": "local", "workers": 1, "environment": ["six==1.16.0", entry]})
    for allowed in ("pinned", "any"):
        with dask.config.set({"cumulo.share.allow-requirements": allowed}):
            with pytest.raises(SpecError) as info:
                merge_spec_from(path, None, {}, say=lambda _: None)
        text = str(info.value)
        assert repr(entry) in text and "never come from a notebook" in text
        assert "allow-requirements': " not in text  # no setting lets them through, so none is suggested


def test_a_requirements_file_path_is_not_taken(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    path = shared(tmp_path, {"provider": "local", "workers": 1, "environment": str(tmp_path / "requirements.txt")})
    with dask.config.set({"cumulo.share.allow-requirements": "any"}):
        with pytest.raises(SpecError, match="requirements file .* on its author's machine"):
            merge_spec_from(path, None, {}, say=lambda _: None)


def test_version_ranges_need_the_index_level(tmp_path: Path) -> None:
    path = shared(tmp_path, {"provider": "local", "workers": 1, "environment": ["six>=1.0", "numpy"]})
    with pytest.raises(SpecError) as info:
        merge_spec_from(path, None, {}, say=lambda _: None)
    assert "'six>=1.0': not pinned to one version" in str(info.value) and "'numpy': not pinned" in str(info.value)
    assert "'cumulo.share.allow-requirements': 'index'" in str(info.value)
    with dask.config.set({"cumulo.share.allow-requirements": "index"}):
        _, fields = merge_spec_from(path, None, {}, say=lambda _: None)
    assert fields["environment"] == ["six>=1.0", "numpy"]
    with dask.config.set({"cumulo.share.allow-requirements": "everything"}):
        with pytest.raises(ConfigError, match="cumulo.share.allow-requirements='everything': use one of pinned"):
            merge_spec_from(path, None, {}, say=lambda _: None)


def test_the_callers_environment_replaces_the_notebooks_unchecked(tmp_path: Path) -> None:
    path = shared(tmp_path, {"provider": "local", "workers": 1,
                             "environment": ["evilpkg @ https://packages.example.invalid/evilpkg-0.1.tar.gz"]})
    said: list[str] = []
    _, fields = merge_spec_from(path, None, {"environment": "sync"}, say=said.append)
    assert fields["environment"] == "sync"
    assert "cumulo: nb.shared.ipynb: the workers' environment: yours ('sync'), not the notebook's" in said


def test_pinned_requirements_pass_and_everything_taken_is_shown_before_launch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared(tmp_path, {"provider": "local", "workers": 1, "threads_per_worker": 1, "budget": 2.0,
                             "idle_timeout": 600.0, "environment": ["six==1.16.0", "attrs[tests]==25.1.0"]})
    capsys.readouterr()
    with cumulo.connect(spec_from=path, name="pins", threads_per_worker=2) as cluster:
        assert cluster.client.submit(sum, [1, 2]).result() == 3
        assert cluster.spec.environment == ["six==1.16.0", "attrs[tests]==25.1.0"]
        assert cluster.spec.idle_timeout == 600.0 and cluster.spec.budget == 2.0
    out = capsys.readouterr().out
    assert ("cumulo: nb.shared.ipynb: from the notebook: provider='local', workers=1, threads_per_worker=1, "
            "budget $2.00, idle timeout 600 s; yours instead: threads_per_worker=2") in out
    assert ("cumulo: nb.shared.ipynb: the workers' environment from the notebook: 2 requirement(s): six==1.16.0, "
            "attrs[tests]==25.1.0") in out


def test_the_setting_is_read_from_the_environment_in_a_fresh_process(tmp_path: Path) -> None:
    """A recipient can allow more without code: DASK_CUMULO__SHARE__ALLOW_REQUIREMENTS, as any cumulo key."""
    path = shared(tmp_path, {"provider": "local", "workers": 1, "environment": ["six>=1.0"]})
    code = f"import cumulo; print(cumulo.from_notebook({str(path)!r}).environment)"
    env = {**os.environ, "DASK_CUMULO__SHARE__ALLOW_REQUIREMENTS": "index"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "['six>=1.0']", done.stderr
