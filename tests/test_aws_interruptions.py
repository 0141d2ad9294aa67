"""A spot worker taken back mid-pipeline: it retires through dask, the result is the same, its billing stops,
and the kernel that launched the cluster replaces it (same market, then the fallback).

The EC2 emulator serves the instance's metadata (IMDSv2) an interruption notice
and terminates it when its time comes, as EC2 does; the watcher in the
instance's first-boot script sees the notice and retires its worker.
"""

from __future__ import annotations

import time

import cumulo
import dask
import dask.dataframe as dd
import pandas as pd
import pytest
from cumulo.cost.spend import spend_of
from cumulo.life.registry import Registry

from .aws_emulator import AwsEmulator
from .conftest import wait_for
from .aws_support import aws, no_aws_leftovers  # noqa: F401,F811  (fixtures)

pytestmark = pytest.mark.timeout(240)


def test_a_spot_worker_taken_back_mid_pipeline_retires_and_stops_billing(
        aws: AwsEmulator, capfd: pytest.CaptureFixture[str]) -> None:
    def _slow(part: pd.DataFrame) -> pd.DataFrame:  # local: sent by value (the instances have no tests/)
        time.sleep(0.25)
        return part.assign(y=part.x * 2)

    frame = pd.DataFrame({"x": range(40_000), "k": [i % 7 for i in range(40_000)]})
    expected = frame.assign(y=frame.x * 2).groupby("k").y.sum()
    # this test follows the instance that is not replaced; test_an_interrupted_worker_is_replaced... the other way
    with dask.config.set({"cumulo.cloud.notice-poll": 0.2, "cumulo.guards.interval": 0.5,
                          "cumulo.cloud.replace-taken-back": False}):
        cluster = cumulo.connect("aws", gpu="A10G", workers=3, spot=True, name="taken-back")
        try:
            client = cluster.client
            registry = Registry()
            spots = {r.resource_id: r for r in registry.resources(cluster_id=cluster.id)
                     if r.kind == "instance" and r.meta.get("market") == "spot"}
            assert len(spots) == 2
            before = registry.get(cluster.id)
            assert before.rate_per_hour == pytest.approx(1.006 + 2 * 0.38)
            held = dd.from_pandas(frame, npartitions=16).persist()
            client.wait_for_workers(3, timeout=30)
            victim = sorted(spots)[0]
            victim_host = next(b.ip for b in aws.booted.values() if b.instance.id == victim)
            # the pipeline runs; AWS serves the notice and takes the instance back 20 s later
            running = client.compute(held.map_partitions(_slow, meta={"x": "i8", "k": "i8", "y": "i8"})
                                     .groupby("k").y.sum())
            taken_at = aws.interrupt(victim, in_seconds=20)
            result = running.result(timeout=120)
            pd.testing.assert_series_equal(result.sort_index(), expected, check_names=False)

            # the worker left through retire_workers (before the deadline), and its data with it
            wait_for(lambda: all(w["host"] != victim_host
                                 for w in client.scheduler_info(n_workers=-1)["workers"].values()),
                     timeout=60, what="the interrupted worker to retire")
            assert time.time() < taken_at, "the worker was still there when AWS took the instance back"
            assert held.x.sum().compute() == frame.x.sum()
            # the notebook's watchdog stopped the instance's billing at the deadline, once
            row = wait_for(lambda: (r := registry.get(cluster.id)).rate_changes and r, timeout=30,
                           what="the watchdog to stop the instance's billing")
            assert row.rate_per_hour == pytest.approx(1.006 + 0.38)
            states = {r.resource_id: r.state for r in registry.resources(cluster_id=cluster.id)}
            assert states[victim] == "interrupted"
            with dask.config.set({"cumulo.cost.billing-granularity": "1s"}):
                an_hour_on = spend_of(row, None, now=row.created + 3600).amount
                assert an_hour_on == pytest.approx(
                    1.006 + 0.38 + 0.38 * (taken_at - row.created) / 3600, abs=0.01)
            events = [m for _, kind, m in registry.events(cluster.id) if kind == "interrupted"]
            assert len(events) == 1 and "interrupted (spot)" in events[0] and victim in events[0]
            assert events[0].endswith("Not replaced (cumulo.cloud.replace-taken-back is off).")
            assert "interrupted (spot)" in capfd.readouterr().err
            # EC2 terminated it when its time came; the rest of the cluster still computes
            wait_for(lambda: all(i.id != victim for i in aws.live()), timeout=40, what="EC2 to take it back")
            assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
        finally:
            cluster.close()
    assert Registry().get(cluster.id).state == "closed"
    assert aws.wait_idle()


def test_an_interrupted_worker_is_replaced_and_the_replacement_falls_back_to_on_demand(
        aws: AwsEmulator, capfd: pytest.CaptureFixture[str]) -> None:
    """Spot capacity is gone by the time the worker is taken back: its replacement is on-demand, billed so."""
    with dask.config.set({"cumulo.cloud.notice-poll": 0.2, "cumulo.guards.interval": 0.5}):
        cluster = cumulo.connect("aws", gpu="A10G", workers=2, spot=True, name="replaced")
        try:
            client = cluster.client
            registry = Registry()
            (victim,) = [r.resource_id for r in registry.resources(cluster_id=cluster.id)
                         if r.kind == "instance" and r.meta.get("market") == "spot"]
            assert registry.get(cluster.id).rate_per_hour == pytest.approx(1.006 + 0.38)
            victim_host = next(b.ip for b in aws.booted.values() if b.instance.id == victim)
            held = dd.from_pandas(pd.DataFrame({"x": range(10_000)}), npartitions=8).persist()
            client.wait_for_workers(2, timeout=30)
            aws.faults.spot_refused.add("*")  # no spot anywhere now: the replacement must fall back
            taken_at = aws.interrupt(victim, in_seconds=15)

            def replaced() -> list[str]:
                return [m for _, kind, m in registry.events(cluster.id) if kind == "replaced"]

            (line,) = wait_for(replaced, timeout=120, what="the replacement to join")
            (new,) = [r for r in registry.resources(cluster_id=cluster.id) if r.kind == "instance"
                      and r.resource_id != victim and not r.meta["name"].endswith("-head")]
            assert new.meta["market"] == "on-demand" and new.meta["price_per_hour"] == pytest.approx(1.006)
            assert new.resource_id in line and "on-demand" in line and "$1.006/h" in line
            (said,) = [m for _, kind, m in registry.events(cluster.id) if kind == "interrupted"]
            assert "A replacement is being launched" in said
            err = capfd.readouterr().err
            assert "interrupted (spot)" in err and "replaced what AWS took back" in err
            # the cluster has two instances' workers again, the victim's host not among them
            hosts = {w["host"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
            assert len(hosts) == 2 and victim_host not in hosts
            assert held.x.sum().compute() == sum(range(10_000))
            # billing: the victim until the deadline, the replacement from its request on
            row = registry.get(cluster.id)
            assert row.rate_per_hour == pytest.approx(1.006 + 1.006)
            with dask.config.set({"cumulo.cost.billing-granularity": "1s"}):
                an_hour_on = spend_of(row, None, now=row.created + 3600).amount
            expected = (1.006 + 0.38 * (taken_at - row.created) / 3600
                        + 1.006 * (row.created + 3600 - new.created) / 3600)
            assert an_hour_on == pytest.approx(expected, abs=0.01)
        finally:
            cluster.close()
    assert Registry().get(cluster.id).state == "closed"
    assert aws.wait_idle()
