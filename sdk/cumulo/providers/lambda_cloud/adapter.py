"""Lambda Cloud as the cloud layer's adapter: its API calls in the layer's words.

Instances carry this installation's mark as launch tags (tags.py), read back
first; the name (names.py) stays a readable label, and the mark of what has
no tags (rulesets, SSH keys, instances of older cumulo versions). Each
cluster's firewall is a ruleset of its own in its region, attached at launch
and deleted once its instances are gone (Lambda refuses to delete one still
attached: "in use" is waited out); clusters of cumulo versions before
rulesets had a rule in the account-wide list, still removed at their
teardown. SSH keys are deleted by id, found by name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from dask.utils import parse_timedelta

from ... import config
from ...exceptions import ProviderError, TerminateError
from ..cloud.adapter import CloudAdapter, Instance, Mark, Resource
from ..cloud.plan import Plan
from .api import LambdaApi
from .names import PREFIX, PROVIDER, instance_name, parse
from .tags import mark_of, tags_of

__all__ = ["LambdaAdapter"]


def _instance(data: dict[str, Any]) -> Instance:
    itype: dict[str, Any] = data.get("instance_type") or {}
    cents = itype.get("price_cents_per_hour")
    region = data.get("region") or {}
    return Instance(
        id=str(data["id"]), name=str(data.get("name") or ""), status=str(data.get("status") or ""),
        ip=data.get("ip"), private_ip=data.get("private_ip"), instance_type=itype.get("name"),
        region=region.get("name") if isinstance(region, dict) else (str(region) if region else None),
        price_per_hour=float(cents) / 100 if cents is not None else None,
        labels=tuple((str(t.get("key")), str(t.get("value"))) for t in data.get("tags") or [] if isinstance(t, dict)))


def _in_use(exc: ProviderError) -> bool:
    return getattr(exc, "status", None) == 409 or str(getattr(exc, "code", "")).endswith("firewall-ruleset-in-use")


class LambdaAdapter(CloudAdapter):
    """The Lambda Cloud API (api.py) as the cloud layer drives it."""

    provider = PROVIDER
    title = "Lambda"

    def __init__(self, api: LambdaApi | None = None) -> None:
        self.api = api or LambdaApi()
        self._region: str | None = None
        self._image: str | None = None
        #: this launch's firewall rulesets (name -> id), attached to each instance it creates
        self._rulesets: dict[str, str] = {}

    def prepare(self, plan: Plan) -> None:
        self._region = plan.region
        image = getattr(plan.shape, "image", None)
        self._image = image.id if image is not None else None

    async def aclose(self) -> None:
        await self.api.client.aclose()

    @property
    def api_url(self) -> str:
        return self.api.client.base_url

    # -- marks: names ----------------------------------------------------------------------

    def name(self, mark: Mark) -> str:
        return instance_name(str(mark.installation), str(mark.cluster_id), mark.role).rstrip("-")

    def owner(self, item: Instance | Resource) -> Mark | None:
        tagged = mark_of(item.labels)
        if tagged is not None:  # renaming an instance in Lambda's dashboard does not hide it
            return tagged
        if not item.name.startswith(PREFIX):
            return None
        parsed = parse(item.name)
        if parsed is None:
            return Mark(None, None)  # named like cumulo's, but not readable: someone else's
        return Mark(parsed.installation, parsed.cluster_id, parsed.role)

    # -- instances -------------------------------------------------------------------------

    async def create(self, mark: Mark, *, plan: Plan, ssh_key: str, user_data: str, count: int = 1) -> list[str]:
        return await self.api.launch(region=plan.region, instance_type=plan.instance_type, name=self.name(mark),
                                     ssh_key=ssh_key, user_data=user_data, tags=tags_of(mark),
                                     firewall_rulesets=list(self._rulesets.values()), image=self._image)

    async def instances(self) -> list[Instance]:
        return [_instance(i) for i in await self.api.instances()]

    async def instance(self, instance_id: str) -> Instance | None:
        found = await self.api.instance(instance_id)
        return _instance(found) if found is not None else None

    async def terminate(self, instance_ids: list[str]) -> None:
        await self.api.terminate(instance_ids)

    # -- firewall: a ruleset per cluster -----------------------------------------------------

    async def open_port(self, name: str, *, port: int, source: str) -> None:
        """A ruleset named ``name`` in the launch's region: ``port`` and SSH from ``source`` only."""
        if self._region is None:
            raise ProviderError("the Lambda adapter was not given the launch's plan (its region) before the "
                                "firewall; this is a bug in cumulo")
        rules = [{"protocol": "tcp", "port_range": [p, p], "source_network": source, "description": what}
                 for p, what in ((port, "cumulo: the scheduler's TLS port"), (22, "cumulo: SSH, the cluster's key"))]
        self._rulesets[name] = await self.api.create_firewall_ruleset(name=name, region=self._region, rules=rules)

    async def rules(self) -> list[Resource]:
        """The account's rulesets, and cumulo's rules in the account-wide list (older cumulo versions)."""
        out = []
        for rs in await self.api.firewall_rulesets():
            ports = ", ".join(f"{r.get('protocol', 'tcp')}/{'-'.join(str(p) for p in sorted(set(r.get('port_range') or [])))}"
                              f" from {r.get('source_network')}" for r in rs.get("rules") or [])
            out.append(Resource(str(rs.get("id")), str(rs.get("name") or ""),
                                f"firewall ruleset in {rs.get('region')}: {ports or 'no rules'}"))
        for rule in await self.api.firewall_rules():
            desc = str(rule.get("description") or "")
            if desc.startswith(PREFIX):
                ports = "-".join(str(p) for p in sorted(set(rule.get("port_range") or [])))
                out.append(Resource(desc, desc, f"account-wide rule {rule.get('protocol', 'tcp')}/{ports} from "
                                                f"{rule.get('source_network')}"))
        return out

    async def remove_rules(self, names: Iterable[str]) -> int:
        """Delete the rulesets with these names (waiting out "in use" while Lambda detaches a terminated
        instance, up to ``cumulo.lambda.terminate-timeout``), and account-wide rules with these descriptions."""
        drop = set(names)
        if not drop:
            return 0
        removed = 0
        for rs in await self.api.firewall_rulesets():
            if rs.get("name") in drop and await self._delete_ruleset(str(rs["id"]), str(rs["name"])):
                removed += 1
        rules = await self.api.firewall_rules()
        keep = [r for r in rules if r.get("description") not in drop]
        if len(keep) != len(rules):
            await self.api.set_firewall_rules(keep)
            removed += len(rules) - len(keep)
        return removed

    async def _delete_ruleset(self, ruleset_id: str, name: str) -> bool:
        timeout = float(parse_timedelta(config.get("lambda.terminate-timeout")))
        interval = float(parse_timedelta(config.get("lambda.poll-interval")))
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.api.delete_firewall_ruleset(ruleset_id)
            except ProviderError as exc:
                if not _in_use(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise TerminateError(
                        f"Lambda still holds firewall ruleset {name} as in use {timeout:g} s after its instances "
                        "terminated; it bills nothing, but remove it with `cumulo reap` later or in Lambda's "
                        "dashboard (Firewall)") from None
            await asyncio.sleep(interval)

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
