"""``cumulo.connect("lambda", ...)`` end to end against the emulator, and the API key never leaking."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import dask
import dask.dataframe as dd
import pandas as pd
import pytest

import cumulo
from cumulo.exceptions import CapacityError, CredentialsError, LaunchTimeout, ProviderError, RateLimited
from cumulo.life.registry import Registry

from .lambda_emulator import Emulator
from .lambda_support import emulator, no_orphans  # noqa: F401  (fixtures)


def test_connect_compute_close(emulator: Emulator, tmp_path: Path) -> None:
    with cumulo.connect("lambda", name="gpus", gpu="A100", workers=2, budget=5.0) as cluster:
        assert cluster.provider == "lambda"
        assert cluster.client.scheduler.address.startswith("tls://")
        df = dd.from_pandas(pd.DataFrame({"k": [1, 2, 1, 2] * 50, "v": range(200)}), npartitions=4)
        assert df.groupby("k").v.sum().compute().to_dict() == {1: 9900, 2: 10000}
        row = Registry().find_open("gpus")
        assert row is not None and row.state == "running" and row.rate_per_hour == pytest.approx(2.58)
        assert row.workers == 2
        # a second attach by name (as another kernel would) reaches it over TLS with the stored certificates
        again = cumulo.connect(name="gpus")
        assert again.client.submit(lambda: 41 + 1).result() == 42
        again.disconnect()
    row = Registry().latest("gpus")
    assert row is not None and row.state == "closed"
    assert not emulator.live()
    assert not list((tmp_path / "certs").glob("*")), "certificates are removed once the cluster is gone"


def test_connect_failure_leaves_nothing(emulator: Emulator) -> None:
    emulator.faults.fail_launch_at = 2
    with pytest.raises(CapacityError):
        cumulo.connect("lambda", name="half", gpu="A10", workers=3)
    row = Registry().latest("half")
    assert row is not None and row.state == "failed"


def test_api_key_appears_nowhere(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """Provoke every error path with a key the server even echoes back; the key must not surface anywhere."""
    caplog.set_level(logging.DEBUG)
    good = emulator.api_key
    wrong = "wrong_secret_key_9f8e7d6c5b4a3210"
    texts: list[str] = []

    def collect(exc: BaseException) -> None:
        texts.append("".join(traceback.format_exception(exc)))
        texts.append(repr(exc))

    emulator.faults.echo_credentials = True
    monkeypatch.setenv("LAMBDA_API_KEY", wrong)
    with pytest.raises(CredentialsError) as info:
        cumulo.connect("lambda", gpu="A10", workers=1)
    collect(info.value)
    assert "received Bearer ****3210" in str(info.value), "the server echoed the key and cumulo redacted it"

    monkeypatch.setenv("LAMBDA_API_KEY", good)
    with dask.config.set({"cumulo.cloud.print-progress": True}):
        emulator.faults.no_capacity = {"gpu_1x_a10"}
        with pytest.raises(CapacityError) as info:
            cumulo.connect("lambda", gpu="A10", workers=1)
        collect(info.value)
        emulator.faults.no_capacity = set()
        emulator.faults.rate_limit_burst = 50
        with pytest.raises(RateLimited) as info:
            cumulo.connect("lambda", gpu="A10", workers=1)
        collect(info.value)
        emulator.faults.rate_limit_burst = 0
        emulator.faults.server_errors = 50
        with pytest.raises(ProviderError) as info:
            cumulo.connect("lambda", gpu="A10", workers=1)
        collect(info.value)
        emulator.faults.server_errors = 0
        emulator.faults.stuck_booting = True
        with dask.config.set({"cumulo.cloud.boot-timeout": 0.3}):
            with pytest.raises(LaunchTimeout) as info:
                cumulo.connect("lambda", gpu="A10", workers=1)
        collect(info.value)
        emulator.faults.stuck_booting = False
        with cumulo.connect("lambda", gpu="A10", workers=1) as cluster:
            texts.append(repr(cluster))
            texts.append(cluster._repr_html_())
            texts.append(repr(cluster._deployment.__dict__))

    out = capsys.readouterr()
    texts += [caplog.text, out.out, out.err]
    texts += [inst.user_data for inst in emulator.instances.values()]
    registry = Registry()
    blobs = [p.read_bytes() for p in registry.path.parent.glob(registry.path.name + "*")]
    blobs += [p.read_bytes() for p in (tmp_path / "certs").rglob("*") if p.is_file()]
    for key in (good, wrong):
        for text in texts:
            assert key not in text
        for blob in blobs:
            assert key.encode() not in blob
    assert "offer:" in out.err, "progress went to stderr as configured"


def test_cumulo_down_stops_a_lambda_cluster_from_the_registry_alone(emulator: Emulator) -> None:
    from cumulo.life.inventory import stop

    cluster = cumulo.connect("lambda", name="downme", gpu="A10", workers=2)
    try:
        report = stop("downme")  # what `cumulo down downme` runs, as another process would
        assert [r.name for r in report.stopped] == ["downme"] and not report.failed
        assert not emulator.live()
        assert Registry().latest("downme").state == "closed"
    finally:
        cluster.close()  # the owner closing afterwards finds nothing left to terminate
    assert Registry().latest("downme").state == "closed"


def test_a_lost_scheduler_never_closes_a_billing_cluster(emulator: Emulator) -> None:
    import os
    import signal

    import psutil

    from cumulo.exceptions import ClusterLost

    cluster = cumulo.connect("lambda", name="headless", gpu="A10", workers=1)
    try:
        head = next(i for i in emulator.live() if i.name.endswith("-head"))
        schedulers = [p for p in psutil.process_iter(["cmdline"])
                      if _in_group(p, head.pgid) and "scheduler" in " ".join(p.info["cmdline"] or [])]
        assert schedulers, "the head instance runs a scheduler process"
        for p in schedulers:
            os.kill(p.pid, signal.SIGKILL)
        with pytest.raises(ClusterLost, match="may still be running and billing"):
            cluster.info()
        assert Registry().latest("headless").state == "running", "instances still bill: the row stays open"
        assert emulator.live(), "the instances were not terminated by losing the scheduler"
        with pytest.raises(cumulo.exceptions.ConnectError, match="still be running and billing.*cumulo down"):
            with dask.config.set({"cumulo.connect.timeout": "2s"}):
                cumulo.connect(name="headless")
    finally:
        cluster.close()  # terminates the instances even though the scheduler is gone
    assert Registry().latest("headless").state == "closed"
    assert not emulator.live()


def _in_group(p, pgid) -> bool:  # type: ignore[no-untyped-def]
    import os

    try:
        return os.getpgid(p.pid) == pgid
    except (ProcessLookupError, PermissionError):
        return False
