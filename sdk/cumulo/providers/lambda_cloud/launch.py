"""The launch sequence of one Lambda cluster, each step reported to the checkpoint *before* it can bill.

 1. make the cluster's CA and certificates (tlscerts.py) and, unless the user
    named a key, an SSH key pair: recorded, then uploaded as
    ``cumulo-<installation>-<cluster id>``;
 2. open the scheduler's TLS port in the firewall for the planned source only;
 3. launch the head (scheduler + one worker) named
    ``cumulo-<installation>-<cluster id>-head``, wait booting -> active
    (``boot-timeout``);
 4. launch each other worker in its own request (Lambda launches one instance
    per request, paced by the HTTP client), named ``...-worker-<n>``, while the
    head installs its environment; wait for the scheduler to answer over TLS,
    then for the workers to be active and to join.
Each launch request is recorded (kind "launch", by name) before it is sent and
its instance ids as soon as the answer arrives. On failure the caller tears
everything down (teardown.py); this module only builds up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from distributed.core import rpc
from distributed.security import Security

from ...bootstrap import BootstrapOptions, user_data
from ...envsync import Prepared, compact
from ...exceptions import LaunchTimeout, ProviderError
from ...tlscerts import ClusterTLS, create_cluster_tls
from .api import LambdaApi
from .names import instance_name, key_name, rule_name
from .preflight import Plan
from .settings import Say, bootstrap_options, certs_dir, seconds
from .sshkey import new_key_pair
from .teardown import GONE

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["Launcher"]

_FAILED_BOOT = ("unhealthy", "terminating", "terminated")


class Launcher:
    """Builds one cluster from a :class:`Plan`; ``run()`` returns the scheduler's address and client TLS."""

    def __init__(self, api: LambdaApi, checkpoint: Checkpoint, plan: Plan, say: Say,
                 environment: Prepared | None = None) -> None:
        self.api, self.checkpoint, self.plan, self.say = api, checkpoint, plan, say
        self.cluster_id = checkpoint.cluster_id
        self.installation = checkpoint.installation_id
        self.opts: BootstrapOptions = dataclasses.replace(bootstrap_options(), idle_timeout=plan.idle_timeout)
        if environment is not None:  # the pins travel in the first-boot script; local wheels later, over TLS
            self.opts = dataclasses.replace(
                self.opts, requirements=compact(environment.lock),
                gpu_requirements=compact(environment.gpu_lock) if environment.gpu_lock else None,
                find_links=tuple(environment.lock.find_links))

    async def run(self) -> tuple[str, Security]:
        """Launch everything and wait until all workers joined; raises on the first failure."""
        tls = create_cluster_tls(self.cluster_id, directory=certs_dir())
        security = tls.security("client")
        ssh_key = self.plan.ssh_key or await self._upload_key(tls)
        await self._open_firewall()
        head_script = user_data("head", cluster_id=self.cluster_id, tls=tls, options=self.opts)
        head = await self._launch("head", ssh_key, head_script)
        info = (await self._wait_active(head))[head[0]]
        address = f"tls://{info['ip']}:{self.opts.scheduler_port}"
        self.checkpoint.address(address)
        self.say(f"head instance active at {info['ip']}")
        workers: list[str] = []
        if self.plan.instances > 1:
            # the workers boot (and install their environment) while the head installs and starts its
            # scheduler: they retry joining it until their death timeout
            script = user_data("worker", cluster_id=self.cluster_id, tls=tls, options=self.opts,
                               scheduler_host=info.get("private_ip") or info["ip"])
            for n in range(1, self.plan.instances):
                workers += await self._launch(f"worker-{n}", ssh_key, script)
        await self._wait_scheduler(address, security)
        if workers:
            await self._wait_active(workers)
        await self._wait_workers(address, security, hosts=self.plan.instances)
        return address, security

    async def _upload_key(self, tls: ClusterTLS) -> str:
        name = key_name(self.installation, self.cluster_id)
        path, public = new_key_pair(tls.directory, comment=name)
        # Recorded before the upload: a process killed during it leaves the name for teardown to find.
        self.checkpoint.resource("ssh-key", name, state="requested", meta={"private_key": str(path)})
        stored = await self.api.add_ssh_key(name, public)
        self.checkpoint.resource("ssh-key", name, state="active",
                                 meta={"private_key": str(path), "lambda_id": stored.get("id")})
        self.say(f"ssh key: registered {name} for this cluster (private half in {path})")
        return name

    async def _open_firewall(self) -> None:
        rule_id = rule_name(self.installation, self.cluster_id)
        port, source = self.opts.scheduler_port, self.plan.source
        self.checkpoint.resource("firewall-rule", rule_id, state="requested", meta={"port": port, "source": source})
        rules = await self.api.firewall_rules()
        rules.append({"protocol": "tcp", "port_range": [port, port], "source_network": source,
                      "description": rule_id})
        await self.api.set_firewall_rules(rules)
        self.checkpoint.resource_state(rule_id, "active")
        self.say(f"firewall: opened tcp/{port} (scheduler TLS) to {source} only")

    async def _launch(self, role: str, ssh_key: str, script: str) -> list[str]:
        plan = self.plan
        name = instance_name(self.installation, self.cluster_id, role)
        meta = {"name": name, "region": plan.region, "instance_type": plan.shape.name,
                "price_per_hour": plan.shape.price_per_hour}
        # Recorded before the request: a process killed during it still leaves the name to find it by.
        self.checkpoint.resource("launch", name, state="requested", meta=meta)
        self.say(f"launching {plan.shape.name} in {plan.region} as {name}")
        try:
            ids = await self.api.launch(region=plan.region, instance_type=plan.shape.name, name=name,
                                        ssh_key=ssh_key, user_data=script)
        except ProviderError as exc:
            if getattr(exc, "maybe_applied", False):
                await self._adopt(name, meta)  # record whatever did launch, so teardown terminates it
            raise
        for iid in ids:
            self.checkpoint.resource("instance", iid, state="booting", meta=meta)
        self.checkpoint.resource_state(name, "launched")
        if len(ids) != 1:
            raise ProviderError(f"Lambda answered a launch of one instance named {name} with {len(ids)} ids; "
                                "cumulo is terminating them. Try again.")
        return ids

    async def _adopt(self, name: str, meta: dict[str, Any]) -> None:
        for inst in await self.api.instances():
            if inst.get("name") == name and inst.get("status") not in GONE:
                self.checkpoint.resource("instance", str(inst["id"]), state=str(inst.get("status", "booting")),
                                         meta=meta)

    async def _wait_active(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        timeout, poll = seconds("boot-timeout"), seconds("poll-interval")
        started = time.monotonic()
        deadline, last = started + timeout, dict.fromkeys(ids, "booting")
        while True:
            seen = {str(i["id"]): i for i in await self.api.instances() if str(i["id"]) in last}
            for iid in ids:
                # An instance not listed yet is still booting (the list can lag the launch answer).
                status = str(seen.get(iid, {}).get("status", last[iid]))
                if status != last[iid]:
                    self.checkpoint.resource_state(iid, status)
                    self.say(f"instance {iid} {last[iid]} -> {status} after {time.monotonic() - started:.0f} s")
                    last[iid] = status
                if status in _FAILED_BOOT:
                    raise ProviderError(f"instance {iid} became {status} while booting; cumulo is terminating "
                                        "the cluster. Try again, or another region.")
            if all(s == "active" for s in last.values()):
                return seen
            if time.monotonic() > deadline:
                stuck = [i for i, s in last.items() if s != "active"]
                raise LaunchTimeout(
                    f"instance(s) {', '.join(stuck)} still booting after {timeout:g} s "
                    "(cumulo.lambda.boot-timeout); everything is being terminated. Lambda may be short of "
                    "healthy hardware in this region: try another region, or later.")
            await asyncio.sleep(poll)

    async def _identity(self, address: str, security: Security) -> dict[str, Any] | None:
        try:
            async with rpc(address, connection_args=security.get_connection_args("client"),
                           timeout=min(10.0, seconds("scheduler-timeout"))) as scheduler:
                return dict(await scheduler.identity())
        except (OSError, TimeoutError, asyncio.TimeoutError):
            return None

    async def _wait_scheduler(self, address: str, security: Security) -> None:
        timeout, poll = seconds("scheduler-timeout"), seconds("poll-interval")
        deadline = time.monotonic() + timeout
        while await self._identity(address, security) is None:
            if time.monotonic() > deadline:
                raise LaunchTimeout(
                    f"the scheduler at {address} did not answer over TLS within {timeout:g} s "
                    "(cumulo.lambda.scheduler-timeout); the cluster is being terminated. Its bootstrap log is "
                    "/opt/cumulo/bootstrap.log on the head instance, if you want to look before retrying.")
            await asyncio.sleep(poll)
        self.say(f"scheduler answering at {address} (TLS, this cluster's certificates)")

    async def _wait_workers(self, address: str, security: Security, *, hosts: int) -> None:
        timeout, poll = seconds("workers-timeout"), seconds("poll-interval")
        deadline, joined = time.monotonic() + timeout, -1
        while True:
            ident = await self._identity(address, security) or {}
            now = len({w.get("host") for w in ident.get("workers", {}).values()})
            if now != joined:
                joined = now
                self.say(f"workers joined: {joined}/{hosts} instances")
            if joined >= hosts:
                return
            if time.monotonic() > deadline:
                raise LaunchTimeout(
                    f"only {joined} of {hosts} instances' workers joined within {timeout:g} s "
                    "(cumulo.lambda.workers-timeout); a GPU probe may have failed (see /opt/cumulo/bootstrap.log "
                    "on the instances). The cluster is being terminated.")
            await asyncio.sleep(poll)
