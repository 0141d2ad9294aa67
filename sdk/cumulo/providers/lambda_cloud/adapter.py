"""Lambda Cloud as the cloud layer's adapter: its API calls in the layer's words.

Lambda has no tags, so a resource's mark is its name (names.py); firewall
rules are account-wide and replaced as a whole list (one read-modify-write per
change); SSH keys are deleted by id, found by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..cloud.adapter import CloudAdapter, Instance, Mark, Resource
from ..cloud.plan import Plan
from .api import LambdaApi
from .names import PREFIX, PROVIDER, instance_name, parse

__all__ = ["LambdaAdapter"]


def _instance(data: dict[str, Any]) -> Instance:
    itype: dict[str, Any] = data.get("instance_type") or {}
    cents = itype.get("price_cents_per_hour")
    region = data.get("region") or {}
    return Instance(
        id=str(data["id"]), name=str(data.get("name") or ""), status=str(data.get("status") or ""),
        ip=data.get("ip"), private_ip=data.get("private_ip"), instance_type=itype.get("name"),
        region=region.get("name") if isinstance(region, dict) else (str(region) if region else None),
        price_per_hour=float(cents) / 100 if cents is not None else None)


class LambdaAdapter(CloudAdapter):
    """The Lambda Cloud API (api.py) as the cloud layer drives it."""

    provider = PROVIDER
    title = "Lambda"

    def __init__(self, api: LambdaApi | None = None) -> None:
        self.api = api or LambdaApi()

    async def aclose(self) -> None:
        await self.api.client.aclose()

    @property
    def api_url(self) -> str:
        return self.api.client.base_url

    # -- marks: names ----------------------------------------------------------------------

    def name(self, mark: Mark) -> str:
        return instance_name(str(mark.installation), str(mark.cluster_id), mark.role).rstrip("-")

    def owner(self, item: Instance | Resource) -> Mark | None:
        if not item.name.startswith(PREFIX):
            return None
        parsed = parse(item.name)
        if parsed is None:
            return Mark(None, None)  # named like cumulo's, but not readable: someone else's
        return Mark(parsed.installation, parsed.cluster_id, parsed.role)

    # -- instances -------------------------------------------------------------------------

    async def create(self, mark: Mark, *, plan: Plan, ssh_key: str, user_data: str) -> list[str]:
        return await self.api.launch(region=plan.region, instance_type=plan.instance_type, name=self.name(mark),
                                     ssh_key=ssh_key, user_data=user_data)

    async def instances(self) -> list[Instance]:
        return [_instance(i) for i in await self.api.instances()]

    async def instance(self, instance_id: str) -> Instance | None:
        found = await self.api.instance(instance_id)
        return _instance(found) if found is not None else None

    async def terminate(self, instance_ids: list[str]) -> None:
        await self.api.terminate(instance_ids)

    # -- firewall ---------------------------------------------------------------------------

    async def open_port(self, name: str, *, port: int, source: str) -> None:
        rules = await self.api.firewall_rules()
        rules.append({"protocol": "tcp", "port_range": [port, port], "source_network": source, "description": name})
        await self.api.set_firewall_rules(rules)

    async def rules(self) -> list[Resource]:
        out = []
        for rule in await self.api.firewall_rules():
            desc = str(rule.get("description") or "")
            ports = "-".join(str(p) for p in sorted(set(rule.get("port_range") or [])))
            out.append(Resource(desc, desc, f"{rule.get('protocol', 'tcp')}/{ports} from {rule.get('source_network')}"))
        return out

    async def remove_rules(self, names: Iterable[str]) -> int:
        """Remove the account's rules with these descriptions (one read-modify-write)."""
        drop = set(names)
        if not drop:
            return 0
        rules = await self.api.firewall_rules()
        keep = [r for r in rules if r.get("description") not in drop]
        if len(keep) != len(rules):
            await self.api.set_firewall_rules(keep)
        return len(rules) - len(keep)

    # -- SSH keys ---------------------------------------------------------------------------

    async def add_ssh_key(self, name: str, public_key: str) -> str | None:
        stored = await self.api.add_ssh_key(name, public_key)
        return stored.get("id")

    async def ssh_keys(self) -> list[Resource]:
        return [Resource(str(k.get("id")), str(k.get("name") or "")) for k in await self.api.ssh_keys()]

    async def remove_ssh_keys(self, names: Iterable[str]) -> int:
        wanted = set(names)
        if not wanted:
            return 0
        removed = 0
        for key in await self.api.ssh_keys():
            if key.get("name") in wanted and await self.api.delete_ssh_key(str(key["id"])):
                removed += 1
        return removed
