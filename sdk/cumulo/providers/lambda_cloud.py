"""Lambda Cloud GPU instances as a Dask cluster: ``cumulo.connect("lambda", gpu="A100", workers=4)``.

A thin provider: it turns a ClusterSpec into Lambda API calls (lambda_api.py),
a first-boot script (bootstrap.py) and per-cluster certificates (tlscerts.py).

Launch, in order, each step recorded in the registry *before* it can bill:
 1. resolve the shape against live ``GET /instance-types``, show the offer and
    the estimated $/h; above ``cumulo.lambda.confirm-above-per-hour`` require
    ``options={"confirm": True}``;
 2. make the cluster's CA and certificates; open the scheduler's TLS port in the
    firewall for this client's address only;
 3. launch the head (scheduler + one worker) named ``cumulo-<cluster id>-head``,
    wait booting -> active (per-instance boot timeout) and for the scheduler to
    answer over TLS;
 4. launch the other workers in one request (``quantity``), named
    ``cumulo-<cluster id>-workers``; wait for them to be active and to join.
Any failure, timeout or cancellation terminates everything that launched,
confirms it via ``GET /instances`` and removes the firewall rule, then raises.
Closing does the same. No instance is ever left unrecorded: what a killed
process could not record is found by name by :func:`reap_orphans`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from dask.utils import parse_timedelta
from distributed.core import rpc
from distributed.security import Security

from .. import config
from ..bootstrap import BootstrapOptions, user_data
from ..exceptions import CumuloError, LaunchTimeout, ProviderError, SpecError, TerminateError
from ..registry import ClusterRecord, Registry
from ..spec import ClusterSpec
from ..tlscerts import create_cluster_tls, load_cluster_tls, remove_cluster_tls
from .base import Deployment, Provider
from .lambda_api import InstanceType, LambdaApi, choose_instance_type
from .lambda_reap import Orphan, find_orphans, reap_orphans, reap_orphans_async

__all__ = ["LambdaDeployment", "LambdaProvider", "Orphan", "PREFIX", "find_orphans", "reap_orphans",
           "reap_orphans_async", "teardown"]

logger = logging.getLogger("cumulo.lambda")

#: Every instance and firewall rule cumulo creates at Lambda starts with this.
PREFIX = "cumulo-"
PROVIDER = "lambda"
_GONE = ("terminated",)


def _seconds(key: str) -> float:
    return float(parse_timedelta(config.get(f"lambda.{key}")))


def _certs_dir() -> str | None:
    return config.get("lambda.certs-dir") or None


class _Progress:
    """Progress lines: to the logger, to the caller's callback, and to stderr when configured."""

    def __init__(self, callback: Callable[[str], None] | None) -> None:
        self.callback = callback
        self.echo = bool(config.get("lambda.print-progress"))

    def __call__(self, message: str) -> None:
        logger.info(message)
        if self.callback is not None:
            self.callback(message)
        elif self.echo:
            print(f"cumulo: {message}", file=sys.stderr, flush=True)


def _client_cidr(base_url: str) -> str:
    """The source network allowed to reach the scheduler: config, else this machine's outgoing address."""
    configured = config.get("lambda.client-cidr")
    if configured:
        return str(configured)
    host = urlsplit(base_url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 443))
            address = s.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127.") and not host.startswith("127.") and host != "localhost":
        raise SpecError(
            "cumulo cannot tell which address this machine reaches Lambda from, so it cannot open the "
            "scheduler's port to you alone: set cumulo.lambda.client-cidr to '<your public IP>/32'")
    if address.startswith(("10.", "192.168.")) or address.startswith(tuple(f"172.{i}." for i in range(16, 32))):
        logger.warning(
            "this machine's address %s is private (behind NAT): the firewall rule will not admit your public "
            "address; set cumulo.lambda.client-cidr to '<your public IP>/32'", address)
    return f"{address}/32"


class LambdaDeployment(Deployment):
    """A running Lambda cluster held by the process that launched it."""

    def __init__(self, address: str, *, security: Security, cluster_id: str, registry: Registry,
                 api: LambdaApi, rate_per_hour: float, progress: _Progress) -> None:
        super().__init__(address, security=security, dashboard_link=None)
        self.cluster_id = cluster_id
        self.registry = registry
        self.api = api
        self.rate_per_hour = rate_per_hour
        self._progress = progress

    async def scale(self, n: int) -> None:
        raise ProviderError(
            "scaling a Lambda cluster in place is not supported yet: close it and connect again with workers=N"
        )

    def adapt(self, minimum: int, maximum: int) -> Any:
        raise ProviderError("adaptive scaling of Lambda clusters is not supported yet: choose workers= at connect")

    async def close(self) -> None:
        """Terminate every instance, confirm it with Lambda, remove the firewall rule and certificates.

        Safe to call again after a failure (e.g. a TerminateError): each call uses a live API client.
        """
        if self.api.client.closed:
            self.api = LambdaApi(self.api.secret)
        try:
            await teardown(self.api, self.registry, self.cluster_id, progress=self._progress)
        finally:
            await self.api.client.aclose()


class LambdaProvider(Provider):
    """GPU instances at Lambda Cloud; see the module docstring for the launch sequence."""

    name = PROVIDER
    bills_independently = True  # instances bill until terminated, whatever their scheduler does

    def __init__(self, *, progress: Callable[[str], None] | None = None, api: LambdaApi | None = None) -> None:
        self._callback = progress
        self._api = api

    def security(self, record: ClusterRecord) -> Security:
        """Client TLS for a cluster launched from this machine."""
        return load_cluster_tls(record.id, directory=_certs_dir()).security("client")

    async def stop(self, record: ClusterRecord, registry: Registry) -> None:
        """Terminate a cluster from any process, using only the registry and the API."""
        async with self._api or LambdaApi() as api:
            await teardown(api, registry, record.id, progress=_Progress(self._callback))

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, registry: Registry,
                     progress: Callable[[str], None] | None = None) -> Deployment:
        """Launch the cluster; on any failure terminate what launched (confirmed) and raise."""
        say = _Progress(progress or self._callback)
        if spec.spot:
            raise SpecError("Lambda Cloud has no spot instances: drop spot=True")
        if spec.image:
            raise SpecError("choosing an image is not supported for Lambda yet: drop image= "
                            "(instances use Lambda Stack; dask is pinned to your versions at boot)")
        api = self._api or LambdaApi()
        try:
            types = await api.instance_types()
            shape, region = choose_instance_type(
                types, gpu=spec.gpu, instance_type=spec.instance_type, gpus_per_instance=spec.gpus_per_worker,
                region=spec.region or config.get("lambda.region"))
            n_instances = max(spec.workers if spec.workers is not None else 1, 1)
            rate = shape.price_per_hour * n_instances
            say(f"offer: {n_instances} x {shape.summary()} in {region}; estimated ${rate:.2f}/h "
                "(Lambda's list price from GET /instance-types, billed until terminated)")
            limit = config.get("lambda.confirm-above-per-hour")
            if limit is not None and rate > float(limit) and not spec.options.get("confirm"):
                raise SpecError(
                    f"this cluster would cost about ${rate:.2f}/h, above cumulo.lambda.confirm-above-per-hour "
                    f"(${float(limit):.2f}/h). To go ahead pass options={{'confirm': True}} to connect(), "
                    "or ask for fewer or cheaper instances.")
            ssh_key = config.get("lambda.ssh-key-name") or next(iter(await api.ssh_key_names()), None)
            if not ssh_key:
                raise SpecError("Lambda needs an SSH key on every instance: add one in Lambda's dashboard "
                                "or set cumulo.lambda.ssh-key-name")
        except BaseException:
            if self._api is None:
                await api.client.aclose()
            raise
        registry.update(cluster_id, rate_per_hour=rate)
        launcher = _Launcher(api, registry, cluster_id, shape, region, ssh_key, say)
        try:
            address, security = await launcher.run(n_instances)
        except BaseException as exc:
            say(f"launch failed ({type(exc).__name__}); terminating everything that was launched")
            try:
                await asyncio.shield(teardown(api, registry, cluster_id, progress=say))
            except BaseException as cleanup:
                raise TerminateError(
                    f"the launch failed ({exc}) and cleaning up also failed ({cleanup}); instances of cluster "
                    f"{cluster_id} may still be billing: run `cumulo reap` or terminate "
                    f"{PREFIX}{cluster_id}-* in Lambda's dashboard") from exc
            finally:
                if self._api is None:
                    await api.client.aclose()
            raise
        return LambdaDeployment(address, security=security, cluster_id=cluster_id, registry=registry, api=api,
                                rate_per_hour=rate, progress=say)


class _Launcher:
    """The launch sequence of one cluster (state kept here so that teardown can find everything)."""

    def __init__(self, api: LambdaApi, registry: Registry, cluster_id: str, shape: InstanceType,
                 region: str, ssh_key: str, say: _Progress) -> None:
        self.api, self.registry, self.cluster_id = api, registry, cluster_id
        self.shape, self.region, self.ssh_key, self.say = shape, region, ssh_key, say
        self.opts = BootstrapOptions(
            scheduler_port=int(config.get("lambda.scheduler-port")),
            worker_command=str(config.get("lambda.worker-command")),
            worker_args=str(config.get("lambda.worker-args") or ""),
            gpu_probe=bool(config.get("lambda.gpu-probe")),
            install_packages=bool(config.get("lambda.install-packages")),
            python=str(config.get("lambda.python")),
        )
        if not self.opts.gpu_probe:
            logger.warning("the GPU probe on workers is turned off (cumulo.lambda.gpu-probe=false)")

    async def run(self, n_instances: int) -> tuple[str, Security]:
        tls = create_cluster_tls(self.cluster_id, directory=_certs_dir())
        security = tls.security("client")
        await self._open_firewall()
        head = await self._launch("head", 1, user_data("head", cluster_id=self.cluster_id, tls=tls, options=self.opts))
        info = (await self._wait_active(head))[head[0]]
        address = f"tls://{info['ip']}:{self.opts.scheduler_port}"
        self.registry.update(self.cluster_id, address=address)
        await self._wait_scheduler(address, security)
        workers: list[str] = []
        if n_instances > 1:
            script = user_data("worker", cluster_id=self.cluster_id, tls=tls, options=self.opts,
                               scheduler_host=info.get("private_ip") or info["ip"])
            workers = await self._launch("workers", n_instances - 1, script)
            await self._wait_active(workers)
        await self._wait_workers(address, security, hosts=n_instances)
        return address, security

    async def _open_firewall(self) -> None:
        rule_id = f"{PREFIX}{self.cluster_id}-scheduler-tls"
        port = self.opts.scheduler_port
        source = _client_cidr(self.api.client.base_url)
        self.registry.add_resource(self.cluster_id, PROVIDER, "firewall-rule", rule_id, state="requested",
                                   meta={"port": port, "source": source})
        rules = await self.api.firewall_rules()
        rules.append({"protocol": "tcp", "port_range": [port, port], "source_network": source,
                      "description": rule_id})
        await self.api.set_firewall_rules(rules)
        self.registry.update_resource(PROVIDER, rule_id, state="active")
        self.say(f"firewall: opened tcp/{port} (scheduler TLS) to {source} only")

    async def _launch(self, role: str, quantity: int, script: str) -> list[str]:
        name = f"{PREFIX}{self.cluster_id}-{role}"
        meta = {"name": name, "region": self.region, "instance_type": self.shape.name,
                "price_per_hour": self.shape.price_per_hour, "quantity": quantity}
        # Recorded before the request: a process killed during it still leaves the name to reap by.
        self.registry.add_resource(self.cluster_id, PROVIDER, "launch", name, state="requested", meta=meta)
        self.say(f"launching {quantity} x {self.shape.name} in {self.region} as {name}")
        try:
            ids = await self.api.launch(region=self.region, instance_type=self.shape.name, name=name,
                                        quantity=quantity, ssh_key=self.ssh_key, user_data=script)
        except ProviderError as exc:
            if getattr(exc, "maybe_applied", False):
                await self._adopt(name, meta)  # record whatever did launch, so teardown terminates it
            raise
        for iid in ids:
            self.registry.add_resource(self.cluster_id, PROVIDER, "instance", iid, state="booting", meta=meta)
        self.registry.update_resource(PROVIDER, name, state="launched")
        if len(ids) != quantity:
            raise ProviderError(f"Lambda launched {len(ids)} of {quantity} instances named {name}; "
                                "cumulo is terminating them. Try again, perhaps with fewer workers.")
        return ids

    async def _adopt(self, name: str, meta: dict[str, Any]) -> None:
        for inst in await self.api.instances():
            if inst.get("name") == name and inst.get("status") not in _GONE:
                self.registry.add_resource(self.cluster_id, PROVIDER, "instance", inst["id"],
                                           state=inst.get("status", "booting"), meta=meta)

    async def _wait_active(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + _seconds("boot-timeout")
        started, last, poll = time.monotonic(), dict.fromkeys(ids, "booting"), _seconds("poll-interval")
        while True:
            seen = {i["id"]: i for i in await self.api.instances() if i["id"] in last}
            for iid in ids:
                # An instance not listed yet is still booting (the list can lag the launch answer).
                status = seen.get(iid, {}).get("status", last[iid])
                if status != last[iid]:
                    self.registry.update_resource(PROVIDER, iid, state=status)
                    self.say(f"instance {iid} {last[iid]} -> {status} after {time.monotonic() - started:.0f} s")
                    last[iid] = status
                if status in ("unhealthy", "terminating", "terminated"):
                    raise ProviderError(f"instance {iid} became {status} while booting; cumulo is terminating "
                                        "the cluster. Try again, or another region.")
            if all(s == "active" for s in last.values()):
                return seen
            if time.monotonic() > deadline:
                stuck = [i for i, s in last.items() if s != "active"]
                raise LaunchTimeout(
                    f"instance(s) {', '.join(stuck)} still booting after {_seconds('boot-timeout'):g} s "
                    "(cumulo.lambda.boot-timeout); everything is being terminated. Lambda may be short of "
                    "healthy hardware in this region: try another region, or later.")
            await asyncio.sleep(poll)

    async def _identity(self, address: str, security: Security) -> dict[str, Any] | None:
        try:
            async with rpc(address, connection_args=security.get_connection_args("client"),
                           timeout=min(10.0, _seconds("scheduler-timeout"))) as scheduler:
                return await scheduler.identity()
        except (OSError, TimeoutError, asyncio.TimeoutError):
            return None

    async def _wait_scheduler(self, address: str, security: Security) -> None:
        deadline, poll = time.monotonic() + _seconds("scheduler-timeout"), _seconds("poll-interval")
        while await self._identity(address, security) is None:
            if time.monotonic() > deadline:
                raise LaunchTimeout(
                    f"the scheduler at {address} did not answer over TLS within {_seconds('scheduler-timeout'):g} s "
                    "(cumulo.lambda.scheduler-timeout); the cluster is being terminated. Its bootstrap log is "
                    "/opt/cumulo/bootstrap.log on the head instance, if you want to look before retrying.")
            await asyncio.sleep(poll)
        self.say(f"scheduler answering at {address} (TLS, this cluster's certificates)")

    async def _wait_workers(self, address: str, security: Security, *, hosts: int) -> None:
        deadline, poll, joined = time.monotonic() + _seconds("workers-timeout"), _seconds("poll-interval"), -1
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
                    f"only {joined} of {hosts} instances' workers joined within {_seconds('workers-timeout'):g} s "
                    "(cumulo.lambda.workers-timeout); a GPU probe may have failed (see /opt/cumulo/bootstrap.log "
                    "on the instances). The cluster is being terminated.")
            await asyncio.sleep(poll)


async def teardown(api: LambdaApi, registry: Registry, cluster_id: str,
                   *, progress: Callable[[str], None] | None = None) -> None:
    """Terminate every instance of a cluster, confirm via GET /instances, remove its firewall rule.

    Finds instances both in the registry and by name at Lambda (so that one a
    killed process could not record is not missed). Raises TerminateError,
    naming the instances and their $/h, if termination is not confirmed in time.
    """
    say = progress or logger.info
    prefix = f"{PREFIX}{cluster_id}-"
    recorded = {r.resource_id: r for r in registry.resources(cluster_id=cluster_id, provider=PROVIDER)}
    listed = {i["id"]: i for i in await api.instances() if str(i.get("name", "")).startswith(prefix)}
    try:
        registry.get(cluster_id)
        known = True
    except KeyError:  # reaping instances of a cluster this registry never saw
        known = False
    for iid, inst in listed.items():
        if known and iid not in recorded and inst.get("status") not in _GONE:
            registry.add_resource(cluster_id, PROVIDER, "instance", iid, state=inst.get("status", "unknown"),
                                  meta={"name": inst.get("name"), "adopted": True})
    pending = sorted({r.resource_id for r in recorded.values() if r.kind == "instance" and r.state not in _GONE}
                     | {i for i, inst in listed.items() if inst.get("status") not in _GONE})
    if pending:
        say(f"terminating {len(pending)} instance(s): {', '.join(pending)}")
        await api.terminate(pending)
        for iid in pending:
            registry.update_resource(PROVIDER, iid, state="terminating")
        await _confirm_terminated(api, registry, pending, say)
    await _close_firewall(api, registry, cluster_id, say)
    for r in recorded.values():
        if r.kind == "launch" and r.state != "done":
            registry.update_resource(PROVIDER, r.resource_id, state="done")
    remove_cluster_tls(cluster_id, directory=_certs_dir())


async def _confirm_terminated(api: LambdaApi, registry: Registry, ids: list[str], say: Callable[[str], None]) -> None:
    deadline, poll = time.monotonic() + _seconds("terminate-timeout"), _seconds("poll-interval")
    waiting = set(ids)
    while True:
        try:
            listed = {i["id"]: i for i in await api.instances()}
        except CumuloError as exc:
            listed = None
            logger.warning("could not list instances to confirm termination: %s", exc)
        if listed is not None:
            for iid in sorted(waiting):
                status = listed.get(iid, {}).get("status", "terminated")
                if status in _GONE:
                    registry.update_resource(PROVIDER, iid, state="terminated")
                    waiting.discard(iid)
            if not waiting:
                say(f"confirmed terminated by Lambda: {', '.join(ids)}")
                return
        if time.monotonic() > deadline:
            raise TerminateError(
                f"Lambda has not confirmed termination of {', '.join(sorted(waiting))} within "
                f"{_seconds('terminate-timeout'):g} s: they may still be billing. Run `cumulo reap` to retry, "
                "or terminate them in Lambda's dashboard.")
        await asyncio.sleep(poll)


async def _close_firewall(api: LambdaApi, registry: Registry, cluster_id: str, say: Callable[[str], None]) -> None:
    rule_id = f"{PREFIX}{cluster_id}-scheduler-tls"
    known = [r for r in registry.resources(cluster_id=cluster_id, provider=PROVIDER) if r.kind == "firewall-rule"]
    rules = await api.firewall_rules()
    keep = [r for r in rules if r.get("description") != rule_id]
    if len(keep) != len(rules):
        await api.set_firewall_rules(keep)
        say(f"firewall: removed the rule for tcp/{known[0].meta.get('port') if known else '?'}")
    for r in known:
        registry.update_resource(PROVIDER, r.resource_id, state="removed")
