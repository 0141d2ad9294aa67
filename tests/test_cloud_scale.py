"""``cluster.scale(n)`` of a cloud cluster, in the kernel that launched it (Lambda's emulator: one request per
instance): up launches more instances that bill from their request, down retires their workers through dask
(data kept) and terminates them, confirmed; a failed scale-up leaves nothing billing and the cluster running.
"""

from __future__ import annotations

import json

import cumulo
import dask.dataframe as dd
import pandas as pd
import pytest
from cumulo.exceptions import CapacityError, SpecError
from cumulo.life.registry import Registry

from .lambda_emulator import Emulator
from .lambda_support import emulator, no_orphans  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(240)


def _billing(cluster_id: str) -> dict[str, str]:
    return {r.resource_id: r.state for r in Registry().resources(cluster_id=cluster_id)
            if r.kind == "instance" and r.state not in ("terminated", "preempted", "interrupted")}


def _hosts(client) -> set[str]:  # type: ignore[no-untyped-def]
    return {w["host"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}


def test_scale_up_and_down_in_place_bills_what_runs(emulator: Emulator) -> None:
    cluster = cumulo.connect("lambda", gpu="A10", workers=2, name="grows")
    try:
        client = cluster.client
        registry = Registry()
        assert registry.get(cluster.id).rate_per_hour == pytest.approx(2 * 0.75)
        frame = pd.DataFrame({"x": range(20_000)})
        held = dd.from_pandas(frame, npartitions=12).persist()
        client.wait_for_workers(2, timeout=30)

        cluster.scale(3)
        assert len(emulator.live()) == 3 and len(_billing(cluster.id)) == 3 and len(_hosts(client)) == 3
        (added,) = [i for i in emulator.live() if i.name.endswith("-worker-2")]
        row = registry.get(cluster.id)
        assert row.rate_per_hour == pytest.approx(3 * 0.75)
        added_at = next(r.created for r in registry.resources(cluster_id=cluster.id) if r.resource_id == added.id)
        changes = json.loads(row.rate_changes or "[]")
        assert changes[-1][1] == pytest.approx(3 * 0.75) and changes[-1][0] <= added_at  # from its request on

        cluster.scale(1)  # the head stays; the two others retire (their data moves) and are terminated
        head = next(i for i in emulator.instances.values() if i.name.endswith("-head"))
        assert [i.id for i in emulator.live()] == [head.id] and list(_billing(cluster.id)) == [head.id]
        assert _hosts(client) == {head.private_ip}  # workers bind their private address
        assert held.x.sum().compute() == frame.x.sum(), "retire_workers moved the data to the head's worker"
        assert registry.get(cluster.id).rate_per_hour == pytest.approx(0.75)
        states = {r.resource_id: r.state for r in registry.resources(cluster_id=cluster.id) if r.kind == "instance"}
        assert sorted(states.values()) == ["active", "terminated", "terminated"]

        with pytest.raises(SpecError, match=r"keeps its head instance.*close\(\)"):
            cluster.scale(0)
        assert len(emulator.live()) == 1
        assert [m for _, kind, m in registry.events(cluster.id) if kind == "scale"] == [
            "scaled to 3 workers", "scaled to 1 workers"]
    finally:
        cluster.close()
    assert not emulator.live() and Registry().get(cluster.id).state == "closed"


def test_a_scale_up_that_fails_leaves_nothing_billing_and_the_cluster_running(emulator: Emulator) -> None:
    cluster = cumulo.connect("lambda", gpu="A10", workers=2, name="no-room")
    try:
        before = {i.id for i in emulator.live()}
        emulator.faults.no_capacity.add(next(iter(emulator.live())).type_name)
        with pytest.raises(CapacityError):
            cluster.scale(4)
        assert {i.id for i in emulator.live()} == before
        assert Registry().get(cluster.id).rate_per_hour == pytest.approx(2 * 0.75)
        assert set(_billing(cluster.id)) == before
        assert cluster.client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
    finally:
        cluster.close()
    assert not emulator.live()
