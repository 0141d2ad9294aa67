"""Stopping a cloud cluster for good: terminate (confirmed), then its firewall rule, SSH key and certificates.

Works from any process with only the registry's records and the adapter: the
instances are found both among the cluster's recorded resources and by their
mark at the cloud (one that a killed process never recorded is not missed).
Only ids the cloud lists as not terminated are sent to terminate (Lambda
refuses a whole terminate request over one id it no longer knows); a recorded
id the cloud no longer knows is gone and is recorded as terminated without a
request. Termination is confirmed by listing the instances again until they
are terminated; until then nothing about the cluster is removed and a
TerminateError names what may still bill.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...aio import until
from ...exceptions import CumuloError, TerminateError
from ...security.tlscerts import remove_cluster_tls
from .adapter import GONE, CloudAdapter, Instance, Mark
from .settings import CloudSettings

if TYPE_CHECKING:
    from ...life.checkpoint import Checkpoint

__all__ = ["instances_gone", "of_cluster", "teardown", "terminate_confirmed"]

logger = logging.getLogger("cumulo.cloud")


def of_cluster(cloud: CloudAdapter, inst: Instance, installation: str, cluster_id: str) -> bool:
    """Whether the instance carries the mark of this installation's cluster (or the legacy, installation-less
    mark of that cluster id: a row from an older cumulo)."""
    mark = cloud.owner(inst)
    return mark is not None and mark.cluster_id == cluster_id and mark.installation in (installation, None)


async def instances_gone(cloud: CloudAdapter, checkpoint: Checkpoint) -> bool:
    """Whether no instance of the cluster (recorded, or marked for it at the cloud) is listed as not terminated.

    An instance the cloud no longer lists at all is gone too.
    """
    listed = {i.id: i for i in await cloud.instances()}
    ours = {r.resource_id for r in checkpoint.resources() if r.kind == "instance"}
    ours |= {iid for iid, inst in listed.items()
             if of_cluster(cloud, inst, checkpoint.installation_id, checkpoint.cluster_id)}
    return all(listed[iid].status in GONE for iid in ours if iid in listed)


async def teardown(cloud: CloudAdapter, checkpoint: Checkpoint, *, say: Callable[[str], None],
                   settings: CloudSettings) -> None:
    """Terminate every instance of the checkpoint's cluster (confirmed), then remove its rule, key and files.

    Raises TerminateError, naming the instances, if the cloud does not confirm the
    termination within the provider's ``terminate-timeout``.
    """
    cluster_id, installation = checkpoint.cluster_id, checkpoint.installation_id
    recorded = checkpoint.resources()
    listed = {i.id: i for i in await cloud.instances()}
    named = {iid for iid, inst in listed.items() if of_cluster(cloud, inst, installation, cluster_id)}
    pending = {iid for iid in named if listed[iid].status not in GONE}
    known = checkpoint.known
    recorded_instances = {r.resource_id: r for r in recorded if r.kind == "instance"}
    for iid in sorted(pending - set(recorded_instances)):
        if known:  # a kernel killed between the launch answer and recording it: adopt, then terminate
            inst = listed[iid]
            checkpoint.resource("instance", iid, state=inst.status or "unknown",
                                meta={"name": inst.name, "adopted": True})
    for iid, res in recorded_instances.items():
        if iid in pending:
            continue
        found = listed.get(iid)
        if found is None and res.state not in GONE:  # not in the list: ask once by id (the list can lag a launch)
            found = await cloud.instance(iid)
        if found is not None and found.status not in GONE:
            pending.add(iid)
        elif res.state not in GONE:
            checkpoint.resource_state(iid, "terminated")
            say(f"instance {iid} is {'terminated' if found else f'no longer known to {cloud.title}'}: "
                "recorded as terminated, nothing to send")
    if pending:
        ids = sorted(pending)
        say(f"terminating {len(ids)} instance(s): {', '.join(ids)}")
        await cloud.terminate(ids)
        for iid in ids:
            checkpoint.resource_state(iid, "terminating")
        await terminate_confirmed(cloud, ids, on_terminated=lambda i: checkpoint.resource_state(i, "terminated"),
                                  say=say, settings=settings)
    rules = {r.resource_id for r in recorded if r.kind == "firewall-rule"}
    rules.add(cloud.name(Mark(installation, cluster_id, "scheduler-tls")))
    if await cloud.remove_rules(rules):
        say("firewall: removed the rule for the scheduler's port")
    for r in recorded:
        if r.kind == "firewall-rule" and r.state != "removed":
            checkpoint.resource_state(r.resource_id, "removed")
    keys = {r.resource_id for r in recorded if r.kind == "ssh-key"} | {cloud.name(Mark(installation, cluster_id))}
    if await cloud.remove_ssh_keys(keys):
        say("ssh key: removed the cluster's key from the account")
    for r in recorded:
        if r.kind == "ssh-key" and r.state != "removed":
            checkpoint.resource_state(r.resource_id, "removed")
        elif r.kind == "launch" and r.state != "done":
            checkpoint.resource_state(r.resource_id, "done")
    remove_cluster_tls(cluster_id, directory=settings.certs_dir())


async def terminate_confirmed(
    cloud: CloudAdapter, ids: list[str], *, on_terminated: Callable[[str], None], say: Callable[[str], None],
    settings: CloudSettings,
) -> None:
    """List the instances until every id is terminated (or unlisted); TerminateError past the timeout."""
    timeout = settings.seconds("terminate-timeout")
    waiting = set(ids)

    async def all_terminated() -> bool | None:
        try:
            listed = {i.id: i for i in await cloud.instances()}
        except CumuloError as exc:
            logger.warning("could not list instances to confirm termination: %s", exc)
            return None
        for iid in sorted(waiting):
            inst = listed.get(iid)
            if inst is None or inst.status in GONE:
                on_terminated(iid)
                waiting.discard(iid)
        return True if not waiting else None

    try:
        await until(all_terminated, timeout=timeout, interval=settings.seconds("poll-interval"))
    except TimeoutError:
        raise TerminateError(
            f"{cloud.title} has not confirmed termination of {', '.join(sorted(waiting))} within {timeout:g} s: "
            "they may still be billing. Retry with `cumulo down NAME` or `cumulo reap`, or terminate them "
            f"in {cloud.title}'s dashboard.") from None
    say(f"confirmed terminated by {cloud.title}: {', '.join(ids)}")
