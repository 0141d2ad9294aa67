"""Remote work (training, %%cumulo cells) waits for a worker that is (re)joining instead of failing at once."""

from __future__ import annotations

import threading
import time

import pytest
from cumulo import _workers
from cumulo.exceptions import SpecError
from distributed import Client, LocalCluster


def test_a_worker_that_joins_a_moment_later_is_used() -> None:
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        joiner = threading.Timer(1.0, cluster.scale, args=(1,))  # as a nanny brings a restarted worker back
        joiner.start()
        try:
            infos = _workers.probe_workers(client)
        finally:
            joiner.join()
        assert len(infos) == 1 and infos[0].address in client.scheduler_info()["workers"]


def test_a_cluster_that_stays_empty_is_refused_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_workers, "REJOIN_WAIT_S", 1.0)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        t0 = time.monotonic()
        with pytest.raises(SpecError, match="no workers .*within 1 s.*cluster.scale"):
            _workers.probe_workers(client)
        assert time.monotonic() - t0 >= 1.0
