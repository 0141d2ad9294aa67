"""Where and how to ask for capacity: the ordered attempts of a launch, spot first and on-demand last.

``spot=True`` tries one-time spot in each offered zone, cheapest spot price
first, then on-demand; ``spot="only"`` never falls back; ``spot=False`` is
on-demand. On-demand, too, moves on to the next zone when one has no
capacity. The scheduler's instance is on-demand unless
``cumulo.aws.head-spot`` is on: losing it loses the cluster. Each attempt
carries its own $/h and what that price is, so the ledger bills what was
launched: never a spot instance at the on-demand price, nor the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["Attempt", "Offer", "SpotPrice", "attempts"]

Market = Literal["spot", "on-demand"]


@dataclass(frozen=True)
class SpotPrice:
    """A zone's current spot price and when AWS set it."""

    zone: str
    price: float
    since: datetime


@dataclass(frozen=True)
class Attempt:
    """One request to try: a zone, a market, and the $/h it bills at."""

    zone: str
    market: Market
    price: float
    #: What the price is ("spot price of us-east-1b since 2026-12-07 14:00 UTC", "on-demand list price ...").
    basis: str

    def line(self) -> str:
        return f"{self.zone}, {self.market}, ${self.price:.4g}/h ({self.basis})"


@dataclass(frozen=True)
class Offer:
    """AWS's part of a plan (``Plan.shape``): the image, where, and the attempts for the head and the workers."""

    ami: str
    region: str
    head: tuple[Attempt, ...]
    workers: tuple[Attempt, ...]
    #: zone -> the subnet to launch in there (empty: the default VPC's default subnets).
    subnets: dict[str, str] = field(default_factory=dict)
    instance_profile: str | None = None


def attempts(*, spot: bool | str, zones: list[str], spot_prices: dict[str, SpotPrice], on_demand: float,
             on_demand_basis: str, head: bool = False, head_spot: bool = False) -> list[Attempt]:
    """The attempts of one launch in order (see the module docstring)."""
    on_demand_tries = [Attempt(z, "on-demand", on_demand, on_demand_basis) for z in zones]
    if not spot or (head and not head_spot):
        return on_demand_tries
    priced = sorted((p for z, p in spot_prices.items() if z in zones), key=lambda p: (p.price, p.zone))
    spot_tries = [Attempt(p.zone, "spot", p.price,
                          f"spot price of {p.zone} since {p.since.astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
                  for p in priced]
    return spot_tries if spot == "only" else spot_tries + on_demand_tries
