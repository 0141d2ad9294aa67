"""AWS EC2 GPU instances as a Dask cluster: ``cumulo.connect("aws", gpu="A10G", workers=2, spot=True)``.

A thin provider: the cloud layer (providers/cloud/) launches, tears down and
sweeps through :class:`~.adapter.AWSAdapter`; this class adds what is AWS's
own: its offers and refusals (preflight.py), its config section
(config.yaml, ``cumulo.aws.*``), the credentials it must keep from workers
(keys.py), its prices (prices.csv, refreshed by pricelist.py), and the regions its adapter looks in.
boto3 loads only when AWS is used, not when every provider is declared.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import config
from ...life.registry import Registry
from ...spec import ClusterSpec
from ..cloud.plan import Plan
from ..cloud.provider import CloudDeployment, CloudProvider
from ..cloud.settings import CloudSay
from .keys import CREDENTIALS

if TYPE_CHECKING:
    from .adapter import AWSAdapter

__all__ = ["AWSDeployment", "AWSProvider"]

_HERE = Path(__file__).parent


class AWSDeployment(CloudDeployment):
    """A running AWS cluster held by the process that launched it."""


class AWSProvider(CloudProvider):
    """GPU instances on AWS EC2; see the module docstring and docs/aws.md."""

    name = "aws"
    title = "AWS"
    deployment_class = AWSDeployment
    config_file = _HERE / "config.yaml"
    credentials = CREDENTIALS
    price_file = _HERE / "prices.csv"
    live_prices = True
    takes_own_options = True

    def adapter(self) -> AWSAdapter:
        # heavy: boto3 loads when AWS is used, not when every provider is declared
        from .adapter import AWSAdapter

        return AWSAdapter(regions=self._regions(), say=self._say())

    def _regions(self) -> set[str]:
        """Regions to look in besides the default: ``cumulo.aws.sweep-regions`` and those this registry launched in."""
        found = set(config.get("aws.sweep-regions") or [])
        for res in Registry().resources(provider=self.name):
            region = (res.meta or {}).get("region")
            if region:
                found.add(str(region))
        return found

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse what cannot launch (options, shape, capacity, image, quota, price, NAT) before any row exists."""
        # heavy: the plan reads AWS through boto3
        from .preflight import refuse_unsupported

        refuse_unsupported(spec)
        await super().preflight(spec)

    async def plan(self, cloud: Any, spec: ClusterSpec, say: CloudSay) -> Plan:
        # heavy: the plan reads AWS through boto3
        from .preflight import make_plan

        return await make_plan(cloud, spec, say, self.settings)

    async def running(self, client: Any, spec: ClusterSpec) -> None:
        """With ``forward_credentials=True``: the notebook's short-lived credentials to the workers, kept fresh."""
        if not spec.options.get("forward_credentials"):
            return
        # heavy: boto3, only when credentials are forwarded
        from .forward import Forwarder

        self._forwarder = Forwarder(client)
        await self._forwarder.start()

    @classmethod
    def fetch_prices(cls, today: str) -> list[dict[str, Any]]:
        """On-demand prices from AWS's public price list, and spot prices per zone where credentials exist
        (pricelist.py)."""
        # heavy: httpx and boto3, only for a price refresh
        from .pricelist import price_rows

        return price_rows(today)
