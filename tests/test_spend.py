"""A priced cluster's spend when one of its instances stops billing part-way (a spot instance taken back)."""

from __future__ import annotations

import dask
import pytest

from cumulo.cost.spend import spend_of
from cumulo.life.registry import Registry


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "registry.db")


def _cluster(registry: Registry, *, head: float, workers: list[float]):
    rec = registry.create("spotty", "aws", rate_per_hour=head + sum(workers))
    registry.add_resource(rec.id, "aws", "instance", "i-head", state="active", meta={"price_per_hour": head})
    for n, price in enumerate(workers):
        registry.add_resource(rec.id, "aws", "instance", f"i-w{n}", state="active",
                              meta={"price_per_hour": price, "market": "spot"})
    return rec


def test_an_instance_that_stops_billing_half_way_costs_half_and_only_once(registry):
    rec = _cluster(registry, head=1.0, workers=[0.5, 0.5])
    t0 = rec.created
    with dask.config.set({"cumulo.cost.billing-granularity": "1s"}):
        assert spend_of(registry.get(rec.id), None, now=t0 + 3600).amount == pytest.approx(2.0)
        gone = registry.stop_billing("aws", "i-w1", at=t0 + 1800, state="interrupted")
        assert gone is not None and gone.meta["price_per_hour"] == 0.5
        after = registry.get(rec.id)
        assert after.rate_per_hour == pytest.approx(1.5)
        # an hour: head 1.0 + one worker 0.5 the whole hour, the other half of it
        assert spend_of(after, None, now=t0 + 3600).amount == pytest.approx(1.75)
        assert spend_of(after, None, now=t0 + 3600).rate_per_hour == pytest.approx(1.5)
        # before the interruption nothing changes
        assert spend_of(after, None, now=t0 + 900).amount == pytest.approx(0.5)
        # the same notice seen again (another kernel, a re-attach) changes nothing
        assert registry.stop_billing("aws", "i-w1", at=t0 + 1900, state="interrupted") is None
        assert spend_of(registry.get(rec.id), None, now=t0 + 3600).amount == pytest.approx(1.75)
        assert [r.state for r in registry.resources(cluster_id=rec.id)] == ["active", "active", "interrupted"]


def test_a_late_notice_for_an_earlier_time_moves_every_later_rate(registry):
    rec = _cluster(registry, head=1.0, workers=[0.5, 0.5])
    t0 = rec.created
    with dask.config.set({"cumulo.cost.billing-granularity": "1s"}):
        registry.stop_billing("aws", "i-w1", at=t0 + 2400, state="interrupted")
        registry.stop_billing("aws", "i-w0", at=t0 + 1200, state="interrupted")  # seen later, happened first
        rec = registry.get(rec.id)
        assert rec.rate_per_hour == pytest.approx(1.0)
        # 0-1200 s at 2.0, 1200-2400 s at 1.5, 2400-3600 s at 1.0
        assert spend_of(rec, None, now=t0 + 3600).amount == pytest.approx((2.0 + 1.5 + 1.0) / 3)


def test_unknown_or_unpriced_instances_change_nothing(registry):
    rec = registry.create("plain", "aws", rate_per_hour=2.0)
    registry.add_resource(rec.id, "aws", "instance", "i-x", state="active", meta={})
    assert registry.stop_billing("aws", "i-nope", at=rec.created + 10, state="interrupted") is None
    assert registry.stop_billing("aws", "i-x", at=rec.created + 10, state="interrupted") is not None
    assert registry.get(rec.id).rate_per_hour == 2.0 and registry.get(rec.id).rate_changes is None
