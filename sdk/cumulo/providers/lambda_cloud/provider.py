"""Lambda Cloud GPU instances as a Dask cluster: ``cumulo.connect("lambda", gpu="A100", workers=4)``.

A thin provider over the pieces of this package: ``preflight`` resolves the
spec (preflight.py: every refusal that needs no billable action), ``launch``
builds the cluster (launch.py) and on any failure, timeout or cancellation
tears down what launched (teardown.py) before re-raising, ``stop`` tears a
cluster down from its row alone, and ``sweep_orphans`` finds what no open
cluster owns (orphans.py). It never writes the registry: everything goes
through the lifecycle's Checkpoint.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from distributed.security import Security

from ... import config, envsync
from ...envsync import Prepared
from ...exceptions import ProviderError, TerminateError
from ...registry import ClusterRecord, Registry
from ...spec import ClusterSpec
from ...tlscerts import load_cluster_tls
from ..base import Deployment, Orphan, Provider
from .api import LambdaApi
from .launch import Launcher
from .names import PREFIX
from .orphans import sweep
from .preflight import Plan, make_plan, refuse_unsupported
from .settings import PROVIDER, Say, certs_dir
from .teardown import instances_gone, teardown

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["LambdaDeployment", "LambdaProvider"]


class LambdaDeployment(Deployment):
    """A running Lambda cluster held by the process that launched it."""

    def __init__(self, address: str, *, security: Security, provider: LambdaProvider, checkpoint: Checkpoint,
                 rate_per_hour: float) -> None:
        super().__init__(address, security=security, dashboard_link=None)
        self.cluster_id = checkpoint.cluster_id
        self.rate_per_hour = rate_per_hour
        self._provider = provider
        self._checkpoint = checkpoint

    async def scale(self, n: int) -> None:
        raise ProviderError(
            "scaling a Lambda cluster in place is not supported yet: close it and connect again with workers=N"
        )

    def adapt(self, minimum: int, maximum: int) -> Any:
        raise ProviderError("adaptive scaling of Lambda clusters is not supported yet: choose workers= at connect")

    async def close(self) -> None:
        """Terminate every instance (confirmed), remove the firewall rule, SSH key and certificates.

        Safe to call again after a failure (e.g. a TerminateError): each call uses a new API client.
        """
        await self._provider._teardown(self._checkpoint)


class LambdaProvider(Provider):
    """GPU instances at Lambda Cloud; see the module docstring and docs/lambda.md."""

    name = PROVIDER
    bills_independently = True  # instances bill until terminated, whatever their scheduler does
    can_scale = False
    sweeps_orphans = True

    def __init__(
        self,
        *,
        security: Security | None = None,
        allow_insecure: bool | None = None,
        progress: Callable[[str], None] | None = None,
        api: LambdaApi | None = None,
    ) -> None:
        super().__init__(security=security, allow_insecure=allow_insecure, progress=progress)
        self._api = api
        #: The last spec preflight resolved, its plan and environment, re-used by the launch that follows.
        self._planned: tuple[ClusterSpec, Plan, Prepared | None] | None = None

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[LambdaApi]:
        """The API client: the one given to the constructor (tests), else a new one closed afterwards."""
        if self._api is not None:
            yield self._api
            return
        async with LambdaApi() as api:
            yield api

    def _say(self) -> Say:
        return Say(self.progress)

    def security(self, record: ClusterRecord) -> Security:
        """Client TLS of a cluster launched from this machine (or what the user gave connect())."""
        if self.user_security is not None:
            return self.user_security
        return load_cluster_tls(record.id, directory=certs_dir()).security("client")

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse what cannot launch (spot, image, no key, no capacity, the price, NAT) before any row exists."""
        refuse_unsupported(spec)
        async with self._session() as api:
            plan = await make_plan(api, spec, self._say())
        self._planned = (spec, plan, await self._environment(spec))

    async def _environment(self, spec: ClusterSpec) -> Prepared | None:
        """The notebook's environment for the instances (envsync), checked to resolve before anything bills."""
        if not config.get("lambda.install-packages") or spec.environment == "none":
            return None
        say = self._say()
        say("preparing the workers' environment (lock, local wheels) ...")
        gpu = "cuda" in str(config.get("lambda.worker-command"))
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
        async with self._session() as api:
            planned, self._planned = self._planned, None
            if planned is not None and planned[0] == spec:
                plan, prepared = planned[1], planned[2]
            else:
                plan, prepared = await make_plan(api, spec, say), await self._environment(spec)
            checkpoint.rate(plan.rate_per_hour)
            if prepared is not None:
                checkpoint.event("environment", json.dumps(prepared.describe()))
            try:
                address, security = await Launcher(api, checkpoint, plan, say, prepared).run()
            except BaseException as exc:
                say(f"launch failed ({type(exc).__name__}); terminating everything that was launched")
                try:
                    await asyncio.shield(teardown(api, checkpoint, say=say))
                except BaseException as cleanup:
                    raise TerminateError(
                        f"the launch failed ({exc}) and cleaning up also failed ({cleanup}); instances of cluster "
                        f"{cluster_id} may still be billing: run `cumulo down` or `cumulo reap`, or terminate "
                        f"{PREFIX}{checkpoint.installation_id}-{cluster_id}-* in Lambda's dashboard") from exc
                raise
        deployment = LambdaDeployment(address, security=security, provider=self, checkpoint=checkpoint,
                                      rate_per_hour=plan.rate_per_hour)
        if prepared is not None and prepared.wheels:
            deployment.local_wheels, deployment.local_digest = prepared.wheels, prepared.lock.local_digest
        return deployment

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Terminate a cluster from any process, using only its recorded resources and the API."""
        await self._teardown(checkpoint)

    async def confirm_gone(self, record: ClusterRecord, checkpoint: Checkpoint) -> bool:
        """Whether Lambda lists none of the cluster's instances (recorded or named for it) as still running."""
        async with self._session() as api:
            return await instances_gone(api, checkpoint)

    async def _teardown(self, checkpoint: Checkpoint) -> None:
        async with self._session() as api:
            await teardown(api, checkpoint, say=self._say())

    async def sweep_orphans(
        self, registry: Registry, *, dry_run: bool = True, terminate_unknown: bool = False
    ) -> list[Orphan]:
        """This installation's leftovers (terminated unless ``dry_run``) and others' (reported); see orphans.py."""
        async with self._session() as api:
            return await sweep(api, registry, dry_run=dry_run, terminate_unknown=terminate_unknown,
                               say=self._say())
