"""What runs at a cloud that no open cluster of this registry owns: this installation's leftovers, and others'.

Every resource cumulo creates carries a mark (adapter.Mark: installation id,
cluster id, role), which the adapter puts in its name (Lambda:
``cumulo-<installation id>-<cluster id>-<role>``) or in its tags. The sweep
looks at every instance the cloud lists as not terminated:

- marked with **this** registry's installation id, and its cluster id unknown to
  the registry (the registry file was replaced) or its row final (closed,
  failed, lost) yet it runs: **ours**, terminated (confirmed, with its
  cluster's firewall rule and SSH key) unless ``dry_run``;
- any other instance cumulo made (another installation on the same account,
  a teammate, the pre-installation-id mark): **reported** with its type,
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

from ...exceptions import CumuloError
from ...life.lifecycle import Lifecycle
from ...life.registry import ClusterRecord, Registry
from ..base import Orphan
from .adapter import GONE, CloudAdapter, Instance, Mark
from .settings import CloudSettings
from .teardown import teardown, terminate_confirmed

__all__ = ["sweep"]


def _row(registry: Registry, cluster_id: str) -> ClusterRecord | None:
    try:
        return registry.get(cluster_id)
    except KeyError:
        return None


class _Sweep:
    """One pass over the account; see the module docstring for what counts as whose."""

    def __init__(self, cloud: CloudAdapter, registry: Registry, say: Callable[[str], None],
                 settings: CloudSettings) -> None:
        self.cloud, self.registry, self.say, self.settings = cloud, registry, say, settings
        self.provider = cloud.provider
        self.installation = registry.installation_id
        resources = registry.resources(provider=self.provider)
        self.since = {r.resource_id: r.created for r in resources}
        open_ids = {r.id for r in registry.list(include_closed=False)}
        self.owned_by_open = {r.resource_id for r in resources if r.cluster_id in open_ids}

    def own_cluster(self, mark: Mark | None) -> str | None:
        """The cluster id of a mark this installation gave, else None."""
        return mark.cluster_id if mark is not None and mark.installation == self.installation else None

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

    def why_foreign(self, mark: Mark) -> str:
        if mark.installation is None:
            return ("named like cumulo's but not by this installation (an older cumulo, or someone else); "
                    f"left alone: terminate it in {self.cloud.title}'s dashboard, or pass terminate_unknown, if "
                    "nobody needs it")
        return (f"started by another cumulo installation ({mark.installation}: another machine, venv or "
                "teammate); left alone: pass terminate_unknown to terminate it")

    def orphan(self, inst: Instance, *, cluster_id: str | None, reason: str, ours: bool) -> Orphan:
        return Orphan(
            provider=self.provider, resource_id=inst.id, name=inst.name, cluster_id=cluster_id, reason=reason,
            status=inst.status, kind="instance", where=f"{inst.instance_type or '?'} in {inst.region or '?'}",
            price_per_hour=inst.price_per_hour,
            running_since=self.since.get(inst.id) or self.since.get(inst.name), ours=ours)

    async def run(self, *, dry_run: bool, terminate_unknown: bool) -> list[Orphan]:
        found: list[Orphan] = []
        ours: dict[str, list[Orphan]] = {}
        foreign: list[Orphan] = []
        for inst in await self.cloud.instances():
            mark = self.cloud.owner(inst)
            if mark is None or inst.status in GONE or inst.id in self.owned_by_open:
                continue
            own = self.own_cluster(mark)
            if own is not None:
                reason = self.why_ours(own)
                if reason is not None:
                    ours.setdefault(own, []).append(self.orphan(inst, cluster_id=own, reason=reason, ours=True))
            elif mark.installation is None and mark.cluster_id is not None and self.is_open(mark.cluster_id):
                continue  # a legacy-marked instance of an open row of this registry
            else:
                foreign.append(self.orphan(inst, cluster_id=mark.cluster_id, reason=self.why_foreign(mark),
                                           ours=False))
        for cluster_id, orphans in sorted(ours.items()):
            found += await self._terminate_cluster(cluster_id, orphans, dry_run=dry_run)
        found += await self._foreign(foreign, dry_run=dry_run, terminate=terminate_unknown)
        found += await self._stale_rules_and_keys(dry_run=dry_run)
        return found

    async def _terminate_cluster(self, cluster_id: str, orphans: list[Orphan], *, dry_run: bool) -> list[Orphan]:
        if dry_run:
            return [_with(o, "would terminate") for o in orphans]
        checkpoint = Lifecycle(self.registry).checkpoint(cluster_id, self.provider)
        try:
            await teardown(self.cloud, checkpoint, say=self.say, settings=self.settings)
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
            await self.cloud.terminate(ids)
            await terminate_confirmed(self.cloud, ids, on_terminated=lambda _: None, say=self.say,
                                      settings=self.settings)
        except CumuloError as exc:
            return [_with(o, f"FAILED: {exc}") for o in orphans]
        return [replace(o, action="terminated", reason=_terminated_reason(o)) for o in orphans]

    async def _stale_rules_and_keys(self, *, dry_run: bool) -> list[Orphan]:
        """This installation's firewall rules and SSH keys whose cluster is not open."""
        out: list[Orphan] = []
        stale_rules = []
        for rule in await self.cloud.rules():
            own = self.own_cluster(self.cloud.owner(rule))
            if own is not None and not self.is_open(own):
                stale_rules.append(rule.name)
                out.append(Orphan(self.provider, rule.id, rule.name, own, "its cluster is not open", "active",
                                  kind="firewall-rule", where=rule.detail))
        stale_keys = []
        for key in await self.cloud.ssh_keys():
            own = self.own_cluster(self.cloud.owner(key))
            if own is not None and not self.is_open(own):
                stale_keys.append(key.name)
                out.append(Orphan(self.provider, key.id, key.name, own, "its cluster is not open",
                                  "registered", kind="ssh-key"))
        if dry_run or not out:
            return [_with(o, "would remove") for o in out]
        try:
            await self.cloud.remove_rules(stale_rules)
            await self.cloud.remove_ssh_keys(stale_keys)
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
    cloud: CloudAdapter, registry: Registry, *, settings: CloudSettings, dry_run: bool = True,
    terminate_unknown: bool = False, say: Callable[[str], None] | None = None,
) -> list[Orphan]:
    """Orphans at the cloud with what the sweep did to each (see the module docstring)."""
    sweeper = _Sweep(cloud, registry, say or settings.say(), settings)
    return await sweeper.run(dry_run=dry_run, terminate_unknown=terminate_unknown)
