"""Stopping a Lambda cluster for good: terminate (confirmed), then its firewall rule, SSH key and certificates.

Works from any process with only the registry's records and the API: the
instances are found both among the cluster's recorded resources and by name
at Lambda (one that a killed process never recorded is not missed). Only ids
Lambda lists as not terminated are sent to terminate, because Lambda refuses a
whole terminate request over one id it no longer knows; a recorded id Lambda
no longer knows is gone and is recorded as terminated without a request.
Termination is confirmed by polling ``GET /instances``; until then nothing
about the cluster is removed and a TerminateError names what may still bill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...exceptions import CumuloError, TerminateError
from ...tlscerts import remove_cluster_tls
from .api import LambdaApi
from .names import cluster_prefixes, key_name, rule_name
from .settings import certs_dir, seconds

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["GONE", "instances_gone", "remove_firewall_rules", "remove_ssh_keys", "teardown", "terminate_confirmed"]

logger = logging.getLogger("cumulo.lambda")

#: Instance statuses that no longer bill.
GONE = frozenset({"terminated"})


async def instances_gone(api: LambdaApi, checkpoint: Checkpoint) -> bool:
    """Whether no instance of the cluster (recorded, or named for it at Lambda) is listed as not terminated.

    An instance Lambda no longer lists at all is gone too.
    """
    listed = {str(i["id"]): i for i in await api.instances()}
    prefixes = cluster_prefixes(checkpoint.installation_id, checkpoint.cluster_id)
    ours = {r.resource_id for r in checkpoint.resources() if r.kind == "instance"}
    ours |= {iid for iid, inst in listed.items() if str(inst.get("name") or "").startswith(prefixes)}
    return all(listed[iid].get("status") in GONE for iid in ours if iid in listed)


async def teardown(api: LambdaApi, checkpoint: Checkpoint, *, say: Callable[[str], None]) -> None:
    """Terminate every instance of the checkpoint's cluster (confirmed), then remove its rule, key and files.

    Raises TerminateError, naming the instances, if Lambda does not confirm the
    termination within ``cumulo.lambda.terminate-timeout``.
    """
    cluster_id, installation = checkpoint.cluster_id, checkpoint.installation_id
    recorded = checkpoint.resources()
    listed = {str(i["id"]): i for i in await api.instances()}
    prefixes = cluster_prefixes(installation, cluster_id)
    named = {iid for iid, inst in listed.items() if str(inst.get("name") or "").startswith(prefixes)}
    pending = {iid for iid in named if listed[iid].get("status") not in GONE}
    known = checkpoint.known
    recorded_instances = {r.resource_id: r for r in recorded if r.kind == "instance"}
    for iid in sorted(pending - set(recorded_instances)):
        if known:  # a kernel killed between the launch answer and recording it: adopt, then terminate
            inst = listed[iid]
            checkpoint.resource("instance", iid, state=str(inst.get("status", "unknown")),
                                meta={"name": inst.get("name"), "adopted": True})
    for iid, res in recorded_instances.items():
        if iid in pending:
            continue
        inst = listed.get(iid)
        if inst is None and res.state not in GONE:  # not in the list: ask once by id (the list can lag a launch)
            inst = await api.instance(iid)
        if inst is not None and inst.get("status") not in GONE:
            pending.add(iid)
        elif res.state not in GONE:
            checkpoint.resource_state(iid, "terminated")
            say(f"instance {iid} is {'terminated' if inst else 'no longer known to Lambda'}: "
                "recorded as terminated, nothing to send")
    if pending:
        ids = sorted(pending)
        say(f"terminating {len(ids)} instance(s): {', '.join(ids)}")
        await api.terminate(ids)
        for iid in ids:
            checkpoint.resource_state(iid, "terminating")
        await terminate_confirmed(api, ids, on_terminated=lambda i: checkpoint.resource_state(i, "terminated"),
                                  say=say)
    rules = {r.resource_id for r in recorded if r.kind == "firewall-rule"} | {rule_name(installation, cluster_id)}
    if await remove_firewall_rules(api, rules):
        say("firewall: removed the rule for the scheduler's port")
    for r in recorded:
        if r.kind == "firewall-rule" and r.state != "removed":
            checkpoint.resource_state(r.resource_id, "removed")
    keys = {r.resource_id for r in recorded if r.kind == "ssh-key"} | {key_name(installation, cluster_id)}
    if await remove_ssh_keys(api, keys):
        say("ssh key: removed the cluster's key from the account")
    for r in recorded:
        if r.kind == "ssh-key" and r.state != "removed":
            checkpoint.resource_state(r.resource_id, "removed")
        elif r.kind == "launch" and r.state != "done":
            checkpoint.resource_state(r.resource_id, "done")
    remove_cluster_tls(cluster_id, directory=certs_dir())


async def terminate_confirmed(
    api: LambdaApi, ids: list[str], *, on_terminated: Callable[[str], None], say: Callable[[str], None]
) -> None:
    """Poll ``GET /instances`` until every id is terminated (or unlisted); TerminateError past the timeout."""
    timeout, poll = seconds("terminate-timeout"), seconds("poll-interval")
    deadline = time.monotonic() + timeout
    waiting = set(ids)
    while True:
        try:
            listed: dict[str, dict[str, Any]] | None = {str(i["id"]): i for i in await api.instances()}
        except CumuloError as exc:
            listed = None
            logger.warning("could not list instances to confirm termination: %s", exc)
        if listed is not None:
            for iid in sorted(waiting):
                if listed.get(iid, {}).get("status", "terminated") in GONE:
                    on_terminated(iid)
                    waiting.discard(iid)
            if not waiting:
                say(f"confirmed terminated by Lambda: {', '.join(ids)}")
                return
        if time.monotonic() > deadline:
            raise TerminateError(
                f"Lambda has not confirmed termination of {', '.join(sorted(waiting))} within {timeout:g} s: "
                "they may still be billing. Retry with `cumulo down NAME` or `cumulo reap`, or terminate them "
                "in Lambda's dashboard.")
        await asyncio.sleep(poll)


async def remove_firewall_rules(api: LambdaApi, descriptions: Iterable[str]) -> int:
    """Remove the account's rules with these descriptions (one read-modify-write); how many were removed."""
    drop = set(descriptions)
    if not drop:
        return 0
    rules = await api.firewall_rules()
    keep = [r for r in rules if r.get("description") not in drop]
    if len(keep) != len(rules):
        await api.set_firewall_rules(keep)
    return len(rules) - len(keep)


async def remove_ssh_keys(api: LambdaApi, names: Iterable[str]) -> int:
    """Delete the account's SSH keys with these names; how many were deleted."""
    wanted = set(names)
    if not wanted:
        return 0
    removed = 0
    for key in await api.ssh_keys():
        if key.get("name") in wanted and await api.delete_ssh_key(str(key["id"])):
            removed += 1
    return removed
