"""A rented-instance cloud as a cumulo Provider: everything but the cloud's own API and offers.

A cloud provider subclasses :class:`CloudProvider` and implements two things:
``adapter()`` (its :class:`~.adapter.CloudAdapter`, an async context manager) and
``plan(adapter, spec, say)`` (its offers: shape, region, price -> a :class:`~.plan.Plan`,
using ``check_price`` and ``client_cidr`` from this package). This class then
does the rest the same way for every cloud: ``preflight`` (the plan and the
notebook's environment, before any row exists), ``launch`` (launch.py; on any
failure, timeout or cancellation it tears down what launched, teardown.py,
before re-raising), ``stop`` and ``confirm_gone`` from a row alone, and
``sweep_orphans`` (orphans.py). It never writes the registry: everything goes
through the lifecycle's Checkpoint.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

from distributed.security import Security

from ... import envsync
from ...envsync import Prepared
from ...exceptions import TerminateError
from ...life.registry import ClusterRecord, Registry, ResourceRecord
from ...security.tlscerts import load_cluster_tls
from ...spec import ClusterSpec
from ..base import Deployment, Orphan, Provider
from ..ssh.target import Host
from .adapter import GONE, TAKEN_BACK, CloudAdapter, Mark
from .deployment import CloudDeployment
from .head_ssh import head_host
from .launch import Launcher
from .orphans import sweep
from .plan import Plan
from .settings import CloudSay, CloudSettings
from .teardown import instances_gone, teardown

if TYPE_CHECKING:
    from ...life.checkpoint import Checkpoint

__all__ = ["CloudDeployment", "CloudProvider"]


class CloudProvider(Provider):
    """GPU instances at a cloud, driven through its adapter; see the module docstring."""

    bills_independently = True  # instances bill until terminated, whatever their scheduler does
    can_scale = True  # by the process that launched it: deployment.py
    sweeps_orphans = True
    #: The cloud as messages name it ("Lambda").
    title: ClassVar[str]
    deployment_class: ClassVar[type[CloudDeployment]] = CloudDeployment

    def __init__(
        self,
        *,
        security: Security | None = None,
        allow_insecure: bool | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(security=security, allow_insecure=allow_insecure, progress=progress)
        self.settings = CloudSettings(self.name)
        #: The last spec preflight resolved, its plan and environment, re-used by the launch that follows.
        self._planned: tuple[ClusterSpec, Plan, Prepared | None] | None = None

    # -- what a cloud implements ---------------------------------------------------------------

    @abc.abstractmethod
    def adapter(self) -> CloudAdapter:
        """A new adapter over the cloud's API (the layer closes it)."""

    @abc.abstractmethod
    async def plan(self, cloud: CloudAdapter, spec: ClusterSpec, say: CloudSay) -> Plan:
        """Resolve ``spec`` against the cloud's live offers and show the offer, or raise why it cannot launch."""

    # -- the rest, the same for every cloud ----------------------------------------------------

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[CloudAdapter]:
        async with self.adapter() as cloud:
            yield cloud

    def _say(self) -> CloudSay:
        return self.settings.say(self.progress)

    def security(self, record: ClusterRecord) -> Security:
        """Client TLS of a cluster launched from this machine (or what the user gave connect())."""
        if self.user_security is not None:
            return self.user_security
        return load_cluster_tls(record.id, directory=self.settings.certs_dir()).security("client")

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse what cannot launch (the cloud's own refusals, the price, NAT) before any row exists."""
        async with self._session() as cloud:
            plan = await self.plan(cloud, spec, self._say())
        self._planned = (spec, plan, await self._environment(spec))

    async def _environment(self, spec: ClusterSpec) -> Prepared | None:
        """The notebook's environment for the instances (envsync), checked to resolve before anything bills."""
        if not self.settings.get("install-packages") or spec.environment == "none":
            return None
        say = self._say()
        say("preparing the workers' environment (lock, local wheels) ...")
        gpu = "cuda" in str(self.settings.get("worker-command"))
        prepared = await asyncio.to_thread(envsync.prepare, spec.environment, gpu=gpu)
        if prepared is not None:
            say(f"environment {prepared.lock.digest}: {len(prepared.lock.pins)} packages"
                + (f", local {', '.join(sorted(prepared.wheels))}" if prepared.wheels else "")
                + (" (RAPIDS and CUDA builds on GPU workers)" if gpu else ""))
        return prepared

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        """Launch the cluster; on any failure terminate what launched (confirmed) and re-raise.

        If that cleanup fails too, raises TerminateError: the instances may still bill.
        """
        say = self._say()
        async with self._session() as cloud:
            planned, self._planned = self._planned, None
            if planned is not None and planned[0] == spec:
                plan, prepared = planned[1], planned[2]
            else:
                plan, prepared = await self.plan(cloud, spec, say), await self._environment(spec)
            cloud.prepare(plan)
            checkpoint.rate(plan.rate_per_hour)
            if prepared is not None:
                checkpoint.event("environment", json.dumps(prepared.describe()))
            launcher = Launcher(cloud, checkpoint, plan, say, self.settings, prepared)
            try:
                address, security = await launcher.run()
            except BaseException as exc:
                say(f"launch failed ({type(exc).__name__}); terminating everything that was launched")
                try:
                    await asyncio.shield(teardown(cloud, checkpoint, say=say, settings=self.settings))
                except BaseException as cleanup:
                    pattern = cloud.name(Mark(checkpoint.installation_id, cluster_id, "*"))
                    raise TerminateError(
                        f"the launch failed ({exc}) and cleaning up also failed ({cleanup}); instances of cluster "
                        f"{cluster_id} may still be billing: run `cumulo down` or `cumulo reap`, or terminate "
                        f"{pattern} in {self.title}'s dashboard") from exc
                raise
        deployment = self.deployment_class(address, security=security, provider=self, checkpoint=checkpoint,
                                           rate_per_hour=launcher.rate_per_hour, launcher=launcher)
        if prepared is not None and prepared.wheels:
            deployment.local_wheels, deployment.local_digest = prepared.wheels, prepared.lock.local_digest
        return deployment

    def dashboard_host(self, record: ClusterRecord, resources: list[ResourceRecord]) -> Host:
        """The head, over SSH with its host keys recorded at launch and the cluster's own key (head_ssh.py):
        its dashboard listens on its loopback only."""
        return head_host(resources, user=str(self.settings.get("ssh-user")), title=self.title)

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Terminate a cluster from any process, using only its recorded resources and the API."""
        await self.teardown(checkpoint)

    async def taken_back(self, record: ClusterRecord, resources: list[ResourceRecord]) -> list[tuple[str, str]]:
        """The cluster's recorded instances that the cloud lists as taken back (TAKEN_BACK, e.g. preempted)."""
        billing = {r.resource_id for r in resources if r.kind == "instance"
                   and r.state not in GONE and r.state != "interrupted"}
        if not billing:
            return []
        async with self._session() as cloud:
            return [(i.id, i.status) for i in await cloud.instances() if i.id in billing and i.status in TAKEN_BACK]

    async def confirm_gone(self, record: ClusterRecord, checkpoint: Checkpoint) -> bool:
        """Whether the cloud lists none of the cluster's instances (recorded or marked for it) as still running."""
        async with self._session() as cloud:
            return await instances_gone(cloud, checkpoint)

    async def teardown(self, checkpoint: Checkpoint) -> None:
        """Terminate the checkpoint's cluster (confirmed) and remove its rule, key and certificates."""
        async with self._session() as cloud:
            await teardown(cloud, checkpoint, say=self._say(), settings=self.settings)

    async def sweep_orphans(
        self, registry: Registry, *, dry_run: bool = True, terminate_unknown: bool = False
    ) -> list[Orphan]:
        """This installation's leftovers (terminated unless ``dry_run``) and others' (reported); see orphans.py."""
        async with self._session() as cloud:
            return await sweep(cloud, registry, settings=self.settings, dry_run=dry_run,
                               terminate_unknown=terminate_unknown, say=self._say())
