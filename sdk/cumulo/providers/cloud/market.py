"""Where and how to ask for capacity: the ordered attempts of a launch, spot first and the regular market last.

Shared by every cloud that rents spot capacity (AWS spot instances, Azure Spot
VMs). ``spot=True`` tries spot in each offered zone, cheapest spot price
first, then the regular market (AWS's on-demand, Azure's regular priority);
``spot="only"`` never falls back; ``spot=False`` is the regular market. The
regular market, too, moves on to the next zone when one has no capacity. The
scheduler's instance is regular unless the cloud's ``head-spot`` setting is on:
losing it loses the cluster. Each attempt carries its own $/h and what that
price is, so the ledger bills what was launched: never a spot instance at the
regular price, nor the reverse. A cloud whose spot price is regional rather
than per zone (Azure) passes its region as the one "zone".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["Attempt", "Market", "SpotPrice", "attempts"]

#: The market of an attempt; "on-demand" is the regular market whatever the cloud calls it.
Market = Literal["spot", "on-demand"]


@dataclass(frozen=True)
class SpotPrice:
    """A zone's (or region's) current spot price and when the cloud set it, or published it."""

    zone: str
    price: float
    since: datetime
    #: What the price is, in words an estimate can cite; None: "spot price of <zone> since <since>".
    basis: str | None = None

    def label(self) -> str:
        """What this price is ("spot price of us-east-1b since 2026-12-07 14:00 UTC")."""
        return self.basis or f"spot price of {self.zone} since {self.since.astimezone().strftime('%Y-%m-%d %H:%M %Z')}"


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


def attempts(*, spot: bool | str, zones: list[str], spot_prices: dict[str, SpotPrice], on_demand: float,
             on_demand_basis: str, head: bool = False, head_spot: bool = False) -> list[Attempt]:
    """The attempts of one launch in order (see the module docstring)."""
    on_demand_tries = [Attempt(z, "on-demand", on_demand, on_demand_basis) for z in zones]
    if not spot or (head and not head_spot):
        return on_demand_tries
    priced = sorted((p for z, p in spot_prices.items() if z in zones), key=lambda p: (p.price, p.zone))
    spot_tries = [Attempt(p.zone, "spot", p.price, p.label()) for p in priced]
    return spot_tries if spot == "only" else spot_tries + on_demand_tries
