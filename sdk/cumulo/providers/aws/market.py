"""AWS's part of a launch plan: the image, the region and the ordered attempts (the shared cloud/market.py).

The order of the attempts (spot per zone cheapest first, then on-demand;
``spot="only"`` never falls back; the head on-demand unless
``cumulo.aws.head-spot``) is every spot cloud's and lives in
:mod:`cumulo.providers.cloud.market`; this module adds what only AWS's adapter
reads: the AMI, the subnets per zone and the instance profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cloud.market import Attempt, SpotPrice, attempts

__all__ = ["Attempt", "Offer", "SpotPrice", "attempts"]


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
