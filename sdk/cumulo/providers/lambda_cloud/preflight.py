"""Everything a Lambda launch can be refused for, decided before anything bills (and before any registry row).

:func:`make_plan` turns a spec into a :class:`Plan` (shape, region, instances,
price, SSH key, firewall source) or raises: spot or image asked for, no API key
(CredentialsError, raised when the client is built), an unknown GPU or no
capacity in ``GET /instance-types``, a price above
``cumulo.lambda.confirm-above-per-hour`` without ``options={"confirm": True}``,
a named SSH key the account lacks, or a client behind NAT (see network.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from dask.utils import parse_timedelta

from ... import config
from ...exceptions import SpecError
from ...spec import ClusterSpec
from .api import LambdaApi
from .network import client_cidr
from .settings import Say, seconds
from .shapes import InstanceType, choose_instance_type

__all__ = ["Plan", "make_plan", "refuse_unsupported"]


@dataclass(frozen=True)
class Plan:
    """What a launch will do, as resolved against Lambda just before it."""

    shape: InstanceType
    region: str
    instances: int
    rate_per_hour: float
    #: The user's own key (``cumulo.lambda.ssh-key-name``); None: cumulo makes one for the cluster.
    ssh_key: str | None
    #: The only network the scheduler's port is opened to.
    source: str
    #: Seconds without work after which the head's scheduler stops by itself (the last resort when no
    #: cumulo process is left to enforce the idle timeout); None: never.
    idle_timeout: float | None = None


def _last_resort_idle(spec: ClusterSpec) -> float | None:
    """The head scheduler's own idle timeout: the cluster's, plus the time a launch may wait for its workers.

    dask counts a scheduler idle from its start, and workers may still be booting and installing
    then; the kernel's guards and the reapers enforce the real idle timeout, this only ends a
    scheduler that nobody is left to stop.
    """
    idle = spec.idle_timeout or config.get("guards.idle-timeout")
    return float(parse_timedelta(idle)) + seconds("workers-timeout") if idle else None


def refuse_unsupported(spec: ClusterSpec) -> None:
    """What Lambda cannot do at all, refused without a request (and without an API key)."""
    spec.require_workers(why="Lambda would still bill the instance that runs its scheduler")
    if spec.spot:
        raise SpecError("Lambda Cloud has no spot instances: drop spot=True")
    if spec.image:
        raise SpecError("choosing an image is not supported for Lambda yet: drop image= "
                        "(instances use Lambda Stack; dask is pinned to your versions at boot)")


async def make_plan(api: LambdaApi, spec: ClusterSpec, say: Say) -> Plan:
    """Resolve ``spec`` against live offers and show the offer, or raise why it cannot launch."""
    refuse_unsupported(spec)
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
    ssh_key = config.get("lambda.ssh-key-name") or None
    if ssh_key is not None:
        names = await api.ssh_key_names()
        if ssh_key not in names:
            raise SpecError(
                f"cumulo.lambda.ssh-key-name is {ssh_key!r}, but the account has no SSH key of that name "
                f"(it has: {', '.join(names) or 'none'}). Fix the name, or unset it and cumulo makes a key "
                "pair for each cluster.")
    source = client_cidr(api.client.base_url)
    return Plan(shape=shape, region=region, instances=n_instances, rate_per_hour=rate, ssh_key=ssh_key,
                source=source, idle_timeout=_last_resort_idle(spec))
