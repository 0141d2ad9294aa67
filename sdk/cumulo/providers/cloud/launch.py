"""The launch sequence of one cloud cluster, each step reported to the checkpoint *before* it can bill.

 1. make the cluster's CA and certificates (tlscerts.py) and, unless the user
    named a key, an SSH key pair: recorded, then uploaded under the name the
    adapter gives it (Lambda: ``cumulo-<installation>-<cluster id>``);
 2. open the scheduler's TLS port in the firewall for the planned source only;
 3. create the head (scheduler + one worker), marked ``head`` for this
    installation's cluster, and wait booting -> active (``boot-timeout``);
 4. create each other worker in its own request (``worker-<n>``), or all of
    them in one (``workers``) where the cloud launches many at once, while the
    head installs its environment; wait for the scheduler to answer over TLS,
    then for the workers to be active and to join.
Later, ``grow()`` adds worker instances to the running cluster the same way
(a scale-up, or replacements of instances the cloud took back: deployment.py).
Each request is recorded (kind "launch", by the name the adapter gives it)
before it is sent and its instance ids as soon as the answer arrives; a
request that may have applied is followed by adopting whatever carries its
mark. On failure the caller tears everything down (teardown.py); this module
only builds up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from distributed.core import rpc
from distributed.security import Security

from ...aio import until
from ...envsync import Prepared, compact
from ...exceptions import LaunchTimeout, ProviderError
from ...security.tlscerts import ClusterTLS, create_cluster_tls
from ..base import Say
from .adapter import ACTIVE, BOOTING, FAILED_BOOT, GONE, CloudAdapter, Instance, Mark
from .bootstrap import BootstrapOptions, user_data
from .head_ssh import SSH_META, read_head_ssh
from .plan import Plan
from .settings import CloudSettings
from .sshkey import new_key_pair
from .teardown import terminate_confirmed

if TYPE_CHECKING:
    from ...life.checkpoint import Checkpoint

__all__ = ["Launcher"]


class Launcher:
    """Builds one cluster from a :class:`Plan`; ``run()`` returns the scheduler's address and client TLS."""

    def __init__(self, adapter: CloudAdapter, checkpoint: Checkpoint, plan: Plan, say: Say,
                 settings: CloudSettings, environment: Prepared | None = None) -> None:
        self.cloud, self.checkpoint, self.plan, self.say, self.settings = adapter, checkpoint, plan, say, settings
        self.cluster_id = checkpoint.cluster_id
        self.installation = checkpoint.installation_id
        #: $/h of everything launched: the plan's estimate until each instance's own price is known.
        self.rate_per_hour = plan.rate_per_hour
        self._prices: list[float | None] = []
        self._metas: dict[str, dict[str, Any]] = {}  # each instance's recorded meta, by id
        #: What grow() needs of the launch, once run() has made it: the scheduler's address and client TLS,
        #: the SSH key's name and the workers' first-boot script.
        self.address: str | None = None
        self.security: Security | None = None
        self._ssh_key: str | None = None
        self._ssh_public: str | None = None  # the public half of the key this launch made (None: the user's)
        self._worker_script: str | None = None
        self._grown = 0  # instances grow() launched so far (their roles are "worker-<instances + n>")
        self.head_id: str | None = None
        self.opts: BootstrapOptions = dataclasses.replace(settings.bootstrap_options(), idle_timeout=plan.idle_timeout,
                                                          power_off=adapter.power_off, notice=adapter.notice,
                                                          client_lease=plan.client_lease if adapter.power_off else None,
                                                          client_lease_start=settings.seconds("workers-timeout"))
        if environment is not None:  # the pins travel in the first-boot script; local wheels later, over TLS
            self.opts = dataclasses.replace(
                self.opts, requirements=compact(environment.lock),
                gpu_requirements=compact(environment.gpu_lock) if environment.gpu_lock else None,
                find_links=tuple(environment.lock.find_links))

    def _mark(self, role: str) -> Mark:
        return Mark(self.installation, self.cluster_id, role)

    async def run(self) -> tuple[str, Security]:
        """Launch everything and wait until all workers joined; raises on the first failure."""
        tls = create_cluster_tls(self.cluster_id, directory=self.settings.certs_dir())
        security = tls.security("client")
        ssh_key = self.plan.ssh_key or await self._upload_key(tls)
        await self._open_firewall()
        head_script = user_data("head", cluster_id=self.cluster_id, tls=tls, options=self.opts)
        head = await self._launch("head", ssh_key, head_script)
        self.head_id = head[0]
        info = (await self._wait_active(head))[head[0]]
        address = f"tls://{info.ip}:{self.opts.scheduler_port}"
        self.checkpoint.address(address)
        self.say(f"head instance active at {info.ip}")
        workers: list[str] = []
        script = user_data("worker", cluster_id=self.cluster_id, tls=tls, options=self.opts,
                           scheduler_host=info.private_ip or info.ip)
        self.address, self.security, self._ssh_key, self._worker_script = address, security, ssh_key, script
        if self.plan.instances > 1:
            # the workers boot (and install their environment) while the head installs and starts its
            # scheduler: they retry joining it until their death timeout
            if self.cloud.batch_launch:  # one request for all of them, marked "workers"
                workers = await self._launch("workers", ssh_key, script, count=self.plan.instances - 1)
            else:
                for n in range(1, self.plan.instances):
                    workers += await self._launch(f"worker-{n}", ssh_key, script)
        await self._wait_scheduler(address, security)
        await self._record_head_ssh(head[0], info.ip, address, security)
        if workers:
            await self._wait_active(workers)
        await self._wait_workers(address, security, hosts=self.plan.instances)
        self._record_rate()
        return address, security

    async def grow(self, cloud: CloudAdapter, count: int) -> list[str]:
        """Launch ``count`` more worker instances into the running cluster (a scale-up, a replacement), through
        ``cloud`` (a new adapter: the launch's is closed), and wait until their workers have joined.

        Each instance is recorded before its request, as at launch, and bills from its request on (its own price
        joins the cluster's rate). On any failure, timeout or cancellation, what this call launched is terminated
        (confirmed) before re-raising: the rest of the cluster runs on, and nothing it added still bills.
        """
        if self.address is None or self.security is None or self._worker_script is None or self._ssh_key is None:
            raise ProviderError("the cluster's launch did not finish: nothing to grow")
        self.cloud = cloud
        cloud.prepare(self.plan)
        if self._ssh_public is not None:
            cloud.knows_ssh_key(self._ssh_key, self._ssh_public)
        before = {r.resource_id for r in self.checkpoint.resources("instance")}
        billing: list[str] = []
        try:
            ids: list[str] = []
            roles = ([f"workers-{self.plan.instances + self._grown}"] if cloud.batch_launch
                     else [f"worker-{self.plan.instances + self._grown + n}" for n in range(count)])
            self._grown += count
            for role in roles:
                asked = time.time()
                launched = await self._launch(role, self._ssh_key, self._worker_script,
                                              count=count if cloud.batch_launch else 1)
                for iid in launched:
                    self.checkpoint.billing_starts(iid, at=asked)
                    billing.append(iid)
                ids += launched
            active = await self._wait_active(ids)
            # the new instances' own workers, by address: a retiring worker of the instance being replaced may
            # still be connected, and must not count
            await self._wait_workers(self.address, self.security, hosts=len(ids),
                                     among={a for i in active.values() for a in (i.ip, i.private_ip) if a})
            return ids
        except BaseException:
            added = [r.resource_id for r in self.checkpoint.resources("instance") if r.resource_id not in before]
            await asyncio.shield(self._terminate_added(cloud, added, billing))
            raise

    async def _terminate_added(self, cloud: CloudAdapter, added: list[str], billing: list[str]) -> None:
        """Terminate what a failed grow() launched (confirmed); those that billed stop billing then."""
        if not added:
            return
        self.say(f"adding workers failed: terminating {', '.join(added)}")
        await cloud.terminate(added)

        def gone(iid: str) -> None:
            if iid in billing:
                self.checkpoint.billing_stops(iid, at=time.time(), state="terminated")
            else:
                self.checkpoint.resource_state(iid, "terminated")

        await terminate_confirmed(cloud, added, on_terminated=gone, say=self.say, settings=self.settings)

    def _record_rate(self) -> None:
        """Bill what was launched: where the adapter knows each instance's price (a spot price, a fallback
        to on-demand), the cluster's rate is their sum rather than the plan's estimate."""
        if self._prices and all(p is not None for p in self._prices):
            actual = float(sum(p for p in self._prices if p is not None))
            if abs(actual - self.rate_per_hour) > 1e-9:
                self.checkpoint.rate(actual)
                self.say(f"billing ${actual:.4g}/h for what was launched (the estimate was "
                         f"${self.rate_per_hour:.4g}/h)")
                self.rate_per_hour = actual

    async def _record_head_ssh(self, head: str, ip: str, address: str, security: Security) -> None:
        """Record the head's sshd host keys and port, read over the cluster's TLS (head_ssh.py), for the
        Jupyter server's dashboard tunnel. A head that reports none still runs; its dashboard is not tunneled."""
        found = await read_head_ssh(address, security, timeout=min(10.0, self.settings.seconds("scheduler-timeout")))
        if found is None:
            self.say("the head reported no SSH host key: the Jupyter server will not tunnel to its dashboard")
            return
        meta = {**self._metas.get(head, {}), SSH_META: {**found, "ip": ip}}
        self.checkpoint.resource("instance", head, state=ACTIVE, meta=meta)
        self.say(f"head's SSH host keys recorded ({len(found['host_keys'])}, read over TLS), for its dashboard")

    async def _upload_key(self, tls: ClusterTLS) -> str:
        name = self.cloud.name(self._mark(""))
        path, public = new_key_pair(tls.directory, comment=name)
        self._ssh_public = public
        # Recorded before the upload: a process killed during it leaves the name for teardown to find.
        self.checkpoint.resource("ssh-key", name, state="requested", meta={"private_key": str(path)})
        key_id = await self.cloud.add_ssh_key(name, public)
        self.checkpoint.resource("ssh-key", name, state="active",
                                 meta={"private_key": str(path), f"{self.cloud.provider}_id": key_id})
        self.say(f"ssh key: registered {name} for this cluster (private half in {path})")
        return name

    async def _open_firewall(self) -> None:
        rule = self.cloud.name(self._mark("scheduler-tls"))
        port, source = self.opts.scheduler_port, self.plan.source
        self.checkpoint.resource("firewall-rule", rule, state="requested", meta={"port": port, "source": source})
        await self.cloud.open_port(rule, port=port, source=source)
        self.checkpoint.resource_state(rule, "active")
        self.say(f"firewall: opened tcp/{port} (scheduler TLS) to {source} only")

    async def _launch(self, role: str, ssh_key: str, script: str, count: int = 1) -> list[str]:
        plan, mark = self.plan, self._mark(role)
        name = self.cloud.name(mark)
        meta = {"name": name, "region": plan.region, "instance_type": plan.instance_type,
                "price_per_hour": plan.price_per_hour}
        # Recorded before the request: a process killed during it still leaves the name to find it by.
        self.checkpoint.resource("launch", name, state="requested", meta=meta)
        self.say(f"launching {plan.instance_type} in {plan.region} as {name}")
        try:
            ids = await self.cloud.create(mark, plan=plan, ssh_key=ssh_key, user_data=script, count=count)
        except ProviderError as exc:
            if getattr(exc, "maybe_applied", False):
                await self._adopt(mark, meta)  # record whatever did launch, so teardown terminates it
            raise
        for iid in ids:
            own = {**meta, **self.cloud.launch_meta(iid)}
            self._prices.append(own.get("price_per_hour"))
            self._metas[iid] = own
            self.checkpoint.resource("instance", iid, state=BOOTING, meta=own)
        self.checkpoint.resource_state(name, "launched")
        if len(ids) != count:
            raise ProviderError(f"{self.cloud.title} answered a launch of {count} instance(s) named {name} with "
                                f"{len(ids)} ids; cumulo is terminating them. Try again.")
        return ids

    async def _adopt(self, mark: Mark, meta: dict[str, Any]) -> None:
        for inst in await self.cloud.instances():
            if self.cloud.owner(inst) == mark and inst.status not in GONE:
                self.checkpoint.resource("instance", inst.id, state=inst.status or BOOTING, meta=meta)

    async def _wait_active(self, ids: list[str]) -> dict[str, Instance]:
        timeout = self.settings.seconds("boot-timeout")
        started = time.monotonic()
        last = dict.fromkeys(ids, BOOTING)

        async def all_active() -> dict[str, Instance] | None:
            seen = {i.id: i for i in await self.cloud.instances() if i.id in last}
            for iid in ids:
                # An instance not listed yet is still booting (the list can lag the launch answer).
                status = seen[iid].status if iid in seen else last[iid]
                if status != last[iid]:
                    self.checkpoint.resource_state(iid, status)
                    self.say(f"instance {iid} {last[iid]} -> {status} after {time.monotonic() - started:.0f} s")
                    last[iid] = status
                if status in FAILED_BOOT:
                    raise ProviderError(f"instance {iid} became {status} while booting; cumulo is terminating "
                                        "the cluster. Try again, or another region.")
            return seen if all(s == ACTIVE for s in last.values()) else None

        try:
            return await until(all_active, timeout=timeout, interval=self.settings.seconds("poll-interval"))
        except TimeoutError:
            stuck = [i for i, s in last.items() if s != ACTIVE]
            raise LaunchTimeout(
                f"instance(s) {', '.join(stuck)} still booting after {timeout:g} s "
                f"({self.settings.key('boot-timeout')}); everything is being terminated. {self.cloud.title} may "
                "be short of healthy hardware in this region: try another region, or later.") from None

    async def _identity(self, address: str, security: Security) -> dict[str, Any] | None:
        try:
            async with rpc(address, connection_args=security.get_connection_args("client"),
                           timeout=min(10.0, self.settings.seconds("scheduler-timeout"))) as scheduler:
                return dict(await scheduler.identity())
        except (OSError, TimeoutError, asyncio.TimeoutError):
            return None

    async def _wait_scheduler(self, address: str, security: Security) -> None:
        timeout = self.settings.seconds("scheduler-timeout")
        try:
            await until(lambda: self._identity(address, security), timeout=timeout,
                        interval=self.settings.seconds("poll-interval"))
        except TimeoutError:
            raise LaunchTimeout(
                f"the scheduler at {address} did not answer over TLS within {timeout:g} s "
                f"({self.settings.key('scheduler-timeout')}); the cluster is being terminated. Its bootstrap log is "
                "/opt/cumulo/bootstrap.log on the head instance, if you want to look before retrying.") from None
        self.say(f"scheduler answering at {address} (TLS, this cluster's certificates)")

    async def _wait_workers(self, address: str, security: Security, *, hosts: int,
                            among: set[str] | None = None) -> None:
        """Wait until workers on ``hosts`` instances have joined (``among``: counting only these addresses)."""
        timeout = self.settings.seconds("workers-timeout")
        joined = -1

        async def all_joined() -> bool | None:
            nonlocal joined
            ident = await self._identity(address, security) or {}
            now = len({w.get("host") for w in ident.get("workers", {}).values()
                       if among is None or w.get("host") in among})
            if now != joined:
                joined = now
                self.say(f"workers joined: {joined}/{hosts} instances")
            return True if joined >= hosts else None

        try:
            await until(all_joined, timeout=timeout, interval=self.settings.seconds("poll-interval"))
        except TimeoutError:
            raise LaunchTimeout(
                f"only {joined} of {hosts} instances' workers joined within {timeout:g} s "
                f"({self.settings.key('workers-timeout')}); a GPU probe may have failed (see "
                "/opt/cumulo/bootstrap.log on the instances). The cluster is being terminated.") from None
