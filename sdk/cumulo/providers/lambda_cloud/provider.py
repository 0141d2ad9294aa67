"""Lambda Cloud GPU instances as a Dask cluster: ``cumulo.connect("lambda", gpu="A100", workers=4)``.

A thin provider: the cloud layer (providers/cloud/) launches, tears down and
sweeps through :class:`~.adapter.LambdaAdapter`; this class adds what is
Lambda's own: its offers and refusals (preflight.py), its config section
(config.yaml, ``cumulo.lambda.*``), its API key and its prices.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...spec import ClusterSpec
from ..cloud.plan import Plan
from ..cloud.provider import CloudDeployment, CloudProvider
from ..cloud.settings import CloudSay
from .key import API_KEY
from .names import PROVIDER
from .preflight import make_plan, refuse_unsupported

if TYPE_CHECKING:
    from .adapter import LambdaAdapter

__all__ = ["LambdaDeployment", "LambdaProvider"]

_HERE = Path(__file__).parent


class LambdaDeployment(CloudDeployment):
    """A running Lambda cluster held by the process that launched it."""


class LambdaProvider(CloudProvider):
    """GPU instances at Lambda Cloud; see the module docstring and docs/lambda.md."""

    name = PROVIDER
    title = "Lambda"
    deployment_class = LambdaDeployment
    config_file = _HERE / "config.yaml"
    credentials = (API_KEY,)
    price_file = _HERE / "prices.csv"
    live_prices = True

    def adapter(self) -> LambdaAdapter:
        # heavy: the API client (httpx) loads when Lambda is used, not when every provider is declared
        from .adapter import LambdaAdapter

        return LambdaAdapter()

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse what cannot launch (spot, image, no key, no capacity, the price, NAT) before any row exists."""
        refuse_unsupported(spec)
        await super().preflight(spec)

    async def plan(self, cloud: Any, spec: ClusterSpec, say: CloudSay) -> Plan:
        return await make_plan(cloud, spec, say, self.settings)

    @classmethod
    def fetch_prices(cls, today: str) -> list[dict[str, Any]]:
        """Lambda's list prices now, from ``GET /instance-types`` (prices.py)."""
        # heavy: the API client (httpx), only for a price refresh
        from .prices import price_rows

        return price_rows(today)
