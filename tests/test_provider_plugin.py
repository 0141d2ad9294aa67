"""A provider from another package, found through the ``cumulo.providers`` entry point, with no edit to cumulo.

tests/plugins/cumulo_toy/ is a separate project (its own pyproject.toml and entry point): Toy Cloud,
whose instances are Dask processes on this machine. Each test installs it for real with pip
(``--target`` a temporary folder, offline: its build backend is in-tree) and runs cumulo in
subprocesses with that folder on PYTHONPATH, as an installed package would be found. The toy
brings its own config section (``cumulo.toy.*``), secret (``TOYCLOUD_LOGIN``), price rows and
live price source, and orphan sweep; the tests drive connect(), the budget guard, ``cumulo ls``,
``cumulo share``, ``cumulo prices`` and ``cumulo reap`` through it. This process never imports it:
the controls show that without the package none of it happens.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cumulo.providers import known_providers

from .conftest import ROOT

PLUGIN = ROOT / "tests" / "plugins" / "cumulo_toy"


def _random(n: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, str]:
    """The environment of a process that has cumulo-toy installed (pip --target), with its login set."""
    source = tmp_path / "cumulo_toy_src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__"))  # pip builds in place
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(source)], check=True, timeout=120)
    assert (site / "cumulo_toy" / "provider.py").exists() and list(site.glob("cumulo_toy-*.dist-info"))
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p),
        "TOYCLOUD_LOGIN": _random(28),  # no prefix and no secret-looking name: only its declaration finds it
        "DASK_CUMULO__TOY__ACCOUNT": str(tmp_path / "toy-account"),
        "DASK_CUMULO__CATALOG__CACHE_PATH": str(tmp_path / "prices-cache.json"),
        "DASK_CUMULO__GUARDS__INTERVAL": "0.2s",
        "DASK_CUMULO__COST__SAMPLE_INTERVAL": "0.2s",
        "DASK_CUMULO__WIDGETS__CELL_LINE_ON_CONNECT": "False",
    }


def _python(code: str, env: dict[str, str], timeout: float = 240) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _cumulo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cumulo.cli", *args], env=env, capture_output=True, text=True,
                          timeout=240)


def test_cumulo_itself_knows_nothing_of_toy_cloud() -> None:
    """The control: the provider comes from the installed package, not from cumulo or this tree."""
    assert "toy" not in known_providers()
    assert not list((ROOT / "sdk" / "cumulo").rglob("*toy*"))


def test_config_section_secret_and_prices_come_from_the_package(toy: dict[str, str]) -> None:
    out = _python("""
        import json
        import dask
        import cumulo
        from cumulo import config
        from cumulo.cost import catalog
        from cumulo.security import local_security
        from cumulo.exceptions import ConfigError, SpecError
        from cumulo.providers import known_providers, provider_class

        found = {"known": "toy" in known_providers(), "module": provider_class("toy").__module__}
        config.validate()
        found["rate"] = config.get("toy.rate-per-hour")
        found["in_schema"] = "toy" in config.schema()["properties"]
        with dask.config.set({"cumulo.toy.rate-per-hour": -1}):
            try:
                config.validate()
            except ConfigError as exc:
                found["bad_value"] = str(exc)
        with dask.config.set({"cumulo.toy.rate-per-hr": 1}):
            try:
                config.validate()
            except ConfigError as exc:
                found["bad_key"] = str(exc)
        found["scrubbed"] = "TOYCLOUD_LOGIN" in local_security.scrub_patterns()
        try:
            local_security.check_worker_env({"TOYCLOUD_LOGIN": "x"})
        except SpecError as exc:
            found["env_refused"] = str(exc)
        rows = catalog.prices(provider="toy")
        found["bundled"] = sorted(rows["instance_type"])
        found["bundled_label"] = rows["source"].iloc[0]
        report = catalog.refresh()
        found["refreshed"] = report.ok.get("toy")
        found["live_price"] = catalog.price_of("toy", "toy.gpu1")
        found["freshness"] = catalog.freshness()
        print(json.dumps(found))
    """, toy)
    assert out["known"] and out["module"] == "cumulo_toy.provider"
    assert out["rate"] == 3600.0 and out["in_schema"]
    assert "cumulo.toy.rate-per-hour: -1 must be at least 0" in out["bad_value"]
    assert "cumulo.toy.rate-per-hr: unknown key; did you mean 'rate-per-hour'?" in out["bad_key"]
    assert out["scrubbed"] and "TOYCLOUD_LOGIN" in out["env_refused"]
    assert out["bundled"] == ["toy.gpu1", "toy.gpu4"]
    assert "`cumulo prices --refresh` fetches current ones" in out["bundled_label"]
    assert out["refreshed"] == 1 and out["live_price"] == 0.45
    assert any(line.startswith("toy: live prices fetched") for line in out["freshness"])


def test_connect_budget_guard_and_ls(toy: dict[str, str]) -> None:
    out = _python("""
        import json, subprocess, sys, time, warnings
        import cumulo
        from cumulo.cost.metering import spend_of
        from cumulo_toy.provider import _alive

        found = {}
        with cumulo.connect("toy", budget=1e6, name="toy-ls") as cluster:
            found["provider"] = cluster.registry.get(cluster.id).provider
            found["workers"] = len(cluster.client.scheduler_info()["workers"])
            found["ls"] = subprocess.run([sys.executable, "-m", "cumulo.cli", "ls"], capture_output=True,
                                         text=True, timeout=120).stdout
            pids = [int(r.resource_id) for r in cluster.registry.resources(cluster_id=cluster.id)]
        found["stopped_on_close"] = not any(_alive(p) for p in pids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = cumulo.connect("toy", budget=0.5, name="toy-budget")
            deadline = time.monotonic() + 60
            while cluster.status != "closed" and time.monotonic() < deadline:
                time.sleep(0.1)
        found["status"] = cluster.status
        found["tripped"] = str(cluster.watchdog.tripped)
        row = cluster.registry.get(cluster.id)
        found["row"] = [row.state, spend_of(row, None).amount]  # a priced row's spend follows from its clock
        found["resources"] = sorted({r.state for r in cluster.registry.resources(cluster_id=cluster.id)})
        cluster.close()
        print(json.dumps(found))
    """, toy)
    assert out["provider"] == "toy" and out["workers"] == 1
    assert "toy-ls" in out["ls"] and "toy" in out["ls"]
    assert out["stopped_on_close"]
    assert out["status"] == "closed" and "reached its $0.50 budget" in out["tripped"]
    assert out["row"][0] == "closed" and out["row"][1] >= 0.5
    assert out["resources"] == ["terminated"]


def test_share_removes_the_plugins_secret(toy: dict[str, str], tmp_path: Path) -> None:
    login = toy["TOYCLOUD_LOGIN"]
    foreign = "toylogin_" + _random(24)  # someone else's key: found by the format the provider declares
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "id": "a1",
                   "source": [f'x = "{login}"\n', f'y = "{foreign}"\n']}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    control = {k: v for k, v in toy.items() if k != "PYTHONPATH"} | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    plain = _cumulo(control, "share", str(notebook), "-o", str(tmp_path / "plain.ipynb"))
    assert plain.returncode == 0, plain.stderr
    assert login in (tmp_path / "plain.ipynb").read_text(), "without the package, nothing knows the toy's login"
    done = _cumulo(toy, "share", str(notebook), "-o", str(tmp_path / "shared.ipynb"))
    assert done.returncode == 0, done.stderr
    shared = (tmp_path / "shared.ipynb").read_text()
    assert login not in shared and foreign not in shared
    assert "Toy Cloud login" in done.stdout


def test_reap_sweeps_the_plugins_orphans(toy: dict[str, str]) -> None:
    """An instance of this installation whose cluster the registry does not know (a kernel killed mid-launch)."""
    out = _python("""
        import json
        from cumulo.life.registry import Registry
        from cumulo_toy.provider import start_instance
        pid = start_instance(["sleep", "300"], installation=Registry().installation_id, cluster_id="feedfeedfeed",
                             role="head")
        print(json.dumps({"pid": pid}))
    """, toy)
    pid = out["pid"]
    try:
        dry = _cumulo(toy, "reap", "--dry-run")
        assert f"toy: would terminate {pid} toy-feedfeedfeed-head" in dry.stdout, dry.stdout + dry.stderr
        done = _cumulo(toy, "reap")
        assert f"toy: terminated {pid} toy-feedfeedfeed-head" in done.stdout, done.stdout + done.stderr
        gone = _python(f"""
            import json
            from cumulo_toy.provider import _alive, instances
            print(json.dumps({{"alive": _alive({pid}), "instances": instances()}}))
        """, toy)
        assert gone == {"alive": False, "instances": []}
    finally:
        try:
            os.killpg(pid, 9)
        except ProcessLookupError:
            pass
