"""What runs at Lambda that no open cluster of this registry owns: this installation's leftovers, and others'.

Every instance cumulo creates is named ``cumulo-<installation>-<cluster id>-<role>``
(names.py). The sweep looks at every instance Lambda lists as not terminated:

- named with **this** registry's installation id, and its cluster id unknown to
  the registry (the registry file was replaced) or its row final (closed,
  failed, lost) yet it runs: **ours**, terminated (confirmed, with its
  cluster's firewall rule and SSH key) unless ``dry_run``;
- any other ``cumulo-*`` instance (another installation on the same account,
  a teammate, the pre-installation-id name format): **reported** with its type,
  $/h and age where known, and never terminated unless ``terminate_unknown``;
- an instance of an open row, or recorded by one, is not the sweep's business:
  the reaper stops expired open clusters through the lifecycle (so a
  keep-alive cluster whose kernel exited keeps running).

This installation's firewall rules and SSH keys whose cluster is not open are
removed too (unless ``dry_run``); nobody else's are touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ...exceptions import CumuloError
from ...lifecycle import Lifecycle
from ...registry import ClusterRecord, Registry
from ..base import Orphan
from .api import LambdaApi
from .names import PREFIX, CumuloName, parse
from .settings import PROVIDER, Say
from .teardown import GONE, remove_firewall_rules, remove_ssh_keys, teardown, terminate_confirmed

__all__ = ["sweep"]


def _row(registry: Registry, cluster_id: str) -> ClusterRecord | None:
    try:
        return registry.get(cluster_id)
    except KeyError:
        return None


class _Sweep:
    """One pass over the account; see the module docstring for what counts as whose."""

    def __init__(self, api: LambdaApi, registry: Registry, say: Callable[[str], None]) -> None:
        self.api, self.registry, self.say = api, registry, say
        self.installation = registry.installation_id
        resources = registry.resources(provider=PROVIDER)
        self.since = {r.resource_id: r.created for r in resources}
        open_ids = {r.id for r in registry.list(include_closed=False)}
        self.owned_by_open = {r.resource_id for r in resources if r.cluster_id in open_ids}

    def own_cluster(self, parsed: CumuloName | None) -> str | None:
        """The cluster id of a name this installation gave, else None."""
        return parsed.cluster_id if parsed is not None and parsed.installation == self.installation else None

    def is_open(self, cluster_id: str) -> bool:
        """Whether the row is open now (read live: a cluster may have started since the sweep began)."""
        record = _row(self.registry, cluster_id)
        return record is not None and record.is_open

    def why_ours(self, cluster_id: str) -> str | None:
        """Why this installation's cluster is an orphan, or None when its row is open."""
        record = _row(self.registry, cluster_id)
        if record is None:
            return "its cluster is unknown to this registry"
        if record.is_open:
            return None
        return f"its cluster {record.name!r} is {record.state}, yet it runs"

    def why_foreign(self, parsed: CumuloName | None) -> str:
        if parsed is None or parsed.installation is None:
            return ("named like cumulo's but not by this installation (an older cumulo, or someone else); "
                    "left alone: terminate it in Lambda's dashboard, or pass terminate_unknown, if nobody needs it")
        return (f"started by another cumulo installation ({parsed.installation}: another machine, venv or "
                "teammate); left alone: pass terminate_unknown to terminate it")

    def orphan(self, inst: dict[str, Any], *, cluster_id: str | None, reason: str, ours: bool) -> Orphan:
        itype: dict[str, Any] = inst.get("instance_type") or {}
        cents = itype.get("price_cents_per_hour")
        region = inst.get("region") or {}
        region_name = region.get("name", "?") if isinstance(region, dict) else str(region)
        name = str(inst.get("name") or "")
        iid = str(inst["id"])
        return Orphan(
            provider=PROVIDER, resource_id=iid, name=name, cluster_id=cluster_id, reason=reason,
            status=str(inst.get("status")), kind="instance", where=f"{itype.get('name', '?')} in {region_name}",
            price_per_hour=float(cents) / 100 if cents is not None else None,
            running_since=self.since.get(iid) or self.since.get(name), ours=ours)

    async def run(self, *, dry_run: bool, terminate_unknown: bool) -> list[Orphan]:
        found: list[Orphan] = []
        ours: dict[str, list[Orphan]] = {}
        foreign: list[Orphan] = []
        for inst in await self.api.instances():
            name = str(inst.get("name") or "")
            if not name.startswith(PREFIX) or inst.get("status") in GONE or str(inst["id"]) in self.owned_by_open:
                continue
            parsed = parse(name)
            own = self.own_cluster(parsed)
            if own is not None:
                reason = self.why_ours(own)
                if reason is not None:
                    ours.setdefault(own, []).append(self.orphan(inst, cluster_id=own, reason=reason, ours=True))
            elif parsed is not None and parsed.installation is None and self.is_open(parsed.cluster_id):
                continue  # a legacy-named instance of an open row of this registry
            else:
                foreign.append(self.orphan(inst, cluster_id=parsed.cluster_id if parsed else None,
                                           reason=self.why_foreign(parsed), ours=False))
        for cluster_id, orphans in sorted(ours.items()):
            found += await self._terminate_cluster(cluster_id, orphans, dry_run=dry_run)
        found += await self._foreign(foreign, dry_run=dry_run, terminate=terminate_unknown)
        found += await self._stale_rules_and_keys(dry_run=dry_run)
        return found

    async def _terminate_cluster(self, cluster_id: str, orphans: list[Orphan], *, dry_run: bool) -> list[Orphan]:
        if dry_run:
            return [_with(o, "would terminate") for o in orphans]
        checkpoint = Lifecycle(self.registry).checkpoint(cluster_id, PROVIDER)
        try:
            await teardown(self.api, checkpoint, say=self.say)
        except CumuloError as exc:
            return [_with(o, f"FAILED: {exc}") for o in orphans]
        return [_with(o, "terminated") for o in orphans]

    async def _foreign(self, orphans: list[Orphan], *, dry_run: bool, terminate: bool) -> list[Orphan]:
        if not terminate or not orphans:
            return [_with(o, "reported") for o in orphans]
        if dry_run:
            return [_with(o, "would terminate") for o in orphans]
        ids = [o.resource_id for o in orphans]
        self.say(f"terminating {len(ids)} instance(s) not started by this installation (terminate_unknown): "
                 f"{', '.join(ids)}")
        try:
            await self.api.terminate(ids)
            await terminate_confirmed(self.api, ids, on_terminated=lambda _: None, say=self.say)
        except CumuloError as exc:
            return [_with(o, f"FAILED: {exc}") for o in orphans]
        return [replace(o, action="terminated", reason=_terminated_reason(o)) for o in orphans]

    async def _stale_rules_and_keys(self, *, dry_run: bool) -> list[Orphan]:
        """This installation's firewall rules and SSH keys whose cluster is not open."""
        out: list[Orphan] = []
        stale_rules = []
        for rule in await self.api.firewall_rules():
            desc = str(rule.get("description") or "")
            own = self.own_cluster(parse(desc))
            if own is not None and not self.is_open(own):
                stale_rules.append(desc)
                ports = "-".join(str(p) for p in sorted(set(rule.get("port_range") or [])))
                out.append(Orphan(PROVIDER, desc, desc, own, "its cluster is not open", "active",
                                  kind="firewall-rule", where=f"{rule.get('protocol', 'tcp')}/{ports} from "
                                  f"{rule.get('source_network')}"))
        stale_keys = []
        for key in await self.api.ssh_keys():
            name = str(key.get("name") or "")
            own = self.own_cluster(parse(name))
            if own is not None and not self.is_open(own):
                stale_keys.append(name)
                out.append(Orphan(PROVIDER, str(key.get("id")), name, own, "its cluster is not open",
                                  "registered", kind="ssh-key"))
        if dry_run or not out:
            return [_with(o, "would remove") for o in out]
        try:
            await remove_firewall_rules(self.api, stale_rules)
            await remove_ssh_keys(self.api, stale_keys)
        except CumuloError as exc:
            return [_with(o, f"FAILED: {exc}") for o in out]
        return [_with(o, "removed") for o in out]


def _terminated_reason(orphan: Orphan) -> str:
    """Why a foreign instance was terminated, replacing the "left alone" advice it was reported with."""
    who = orphan.reason.split(";", 1)[0]
    return f"{who}; terminated because terminate_unknown was given (its owner's cluster is lost)"


def _with(orphan: Orphan, action: str) -> Orphan:
    return replace(orphan, action=action)


async def sweep(
    api: LambdaApi, registry: Registry, *, dry_run: bool = True, terminate_unknown: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[Orphan]:
    """Orphans at Lambda with what the sweep did to each (see the module docstring)."""
    return await _Sweep(api, registry, say or Say()).run(dry_run=dry_run, terminate_unknown=terminate_unknown)
