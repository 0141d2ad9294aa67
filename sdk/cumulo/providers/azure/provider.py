"""Azure GPU virtual machines as a Dask cluster: ``cumulo.connect("azure", gpu="A100", workers=2)``.

A thin provider: the cloud layer (providers/cloud/) launches, tears down and
sweeps through :class:`~.adapter.AzureAdapter`; this class adds what is
Azure's own: its offers and refusals (preflight.py), its config section
(config.yaml, ``cumulo.azure.*``), the credentials workers must never see
(keys.py) and the subscription. The Azure SDKs load only when Azure is used,
not when every provider is declared. Its pay-as-you-go prices are the
catalog's Azure rows (the bundled snapshot, refreshed from Azure's retail
prices API by ``cumulo prices --refresh``); a Spot VM's is the region's Spot
price, read when the launch is planned (spotprices.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import config
from ...exceptions import CredentialsError
from ...life.registry import ClusterRecord, Registry, ResourceRecord
from ...spec import ClusterSpec
from ..base import Orphan
from ..cloud.adapter import GONE
from ..cloud.plan import Plan
from ..cloud.provider import CloudDeployment, CloudProvider
from ..cloud.settings import CloudSay
from .keys import CREDENTIALS
from .subscription import configured_subscription, subscription_of

if TYPE_CHECKING:
    from ...life.checkpoint import Checkpoint
    from .adapter import AzureAdapter

__all__ = ["AzureDeployment", "AzureProvider"]

_HERE = Path(__file__).parent


class AzureDeployment(CloudDeployment):
    """A running Azure cluster held by the process that launched it."""


class AzureProvider(CloudProvider):
    """GPU VMs on Azure; see the module docstring and docs/azure.md."""

    name = "azure"
    title = "Azure"
    deployment_class = AzureDeployment
    config_file = _HERE / "config.yaml"
    credentials = CREDENTIALS
    takes_own_options = True

    def __init__(self, *args: Any, subscription_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscription = subscription_id
        self._region: str | None = None

    def adapter(self) -> AzureAdapter:
        # heavy: the Azure SDKs load when Azure is used, not when every provider is declared
        from .adapter import AzureAdapter
        from .api import Azure

        azure = Azure(subscription_of(self._subscription))
        return AzureAdapter(azure, region=self._region or str(config.get("azure.region")), say=self._say())

    def _take(self, spec: ClusterSpec) -> None:
        """Remember the spec's subscription and region for the adapters this provider makes."""
        self._subscription = spec.options.get("subscription_id") or self._subscription
        self._region = spec.region or self._region

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse what cannot launch (options, region, Spot max price, size, quotas, price, NAT) before any row
        exists."""
        # light: the refusals need no SDK (preflight.py imports the adapter only for type checking)
        from .preflight import refuse_unsupported

        refuse_unsupported(spec)
        self._take(spec)
        await super().preflight(spec)

    async def plan(self, cloud: Any, spec: ClusterSpec, say: CloudSay) -> Plan:
        # heavy: the plan reads Azure through its SDKs
        from .preflight import make_plan

        self._take(spec)
        return await make_plan(cloud, spec, say, self.settings)

    def _take_record(self, record: ClusterRecord) -> None:
        """The subscription a cluster was launched in, from its row (``cumulo down`` in another process)."""
        options = (record.spec or {}).get("options") or {}
        self._subscription = options.get("subscription_id") or self._subscription
        self._region = (record.spec or {}).get("region") or self._region

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Delete the cluster's VMs (confirmed) and its resource group, from its row alone."""
        self._take_record(record)
        await super().stop(record, checkpoint)

    async def taken_back(self, record: ClusterRecord, resources: list[ResourceRecord]) -> list[tuple[str, str]]:
        """Spot VMs Azure evicted without their watcher's report (a notice missed): with eviction policy Delete
        an evicted VM is deleted, so a recorded Spot VM, still billing in the registry, that ARM no longer lists
        was taken back; each as (id, "preempted"). Asked only when workers left the cluster."""
        self._take_record(record)
        spot = {r.resource_id.lower(): r.resource_id for r in resources if r.kind == "instance"
                and r.meta.get("market") == "spot" and r.state not in GONE and r.state != "interrupted"}
        if not spot:
            return []
        async with self._session() as cloud:
            listed = {i.id.lower() for i in await cloud.instances()}
        return [(rid, "preempted") for low, rid in sorted(spot.items()) if low not in listed]

    async def confirm_gone(self, record: ClusterRecord, checkpoint: Checkpoint) -> bool:
        """Whether Azure lists none of the cluster's VMs as still there."""
        self._take_record(record)
        return await super().confirm_gone(record, checkpoint)

    def _subscriptions(self, registry: Registry) -> list[str]:
        """The subscription configured (option, cumulo.azure.subscription-id, AZURE_SUBSCRIPTION_ID) and every
        one this registry's Azure clusters were launched in."""
        found = set()
        for record in registry.list(include_closed=True):
            if record.provider == self.name:
                sub = ((record.spec or {}).get("options") or {}).get("subscription_id")
                if sub:
                    found.add(str(sub))
        for res in registry.resources(provider=self.name):
            parts = res.resource_id.split("/")
            if len(parts) > 2 and parts[1].lower() == "subscriptions":
                found.add(parts[2])
        default = configured_subscription(self._subscription)
        if default:
            found.add(default)
        return sorted(found)

    async def sweep_orphans(
        self, registry: Registry, *, dry_run: bool = True, terminate_unknown: bool = False
    ) -> list[Orphan]:
        """This installation's leftovers and others', in every subscription this registry knows (see
        cloud/orphans.py); CredentialsError when Azure is not set up here at all (no subscription known)."""
        subscriptions = self._subscriptions(registry)
        if not subscriptions:
            raise CredentialsError("Azure is not set up here: no subscription configured "
                                   "(cumulo.azure.subscription-id or AZURE_SUBSCRIPTION_ID) and none in the registry")
        found: list[Orphan] = []
        for sub in subscriptions:
            self._subscription = sub
            found += await super().sweep_orphans(registry, dry_run=dry_run, terminate_unknown=terminate_unknown)
        return found
