"""Everything a Lambda launch can be refused for, decided before anything bills (and before any registry row).

:func:`make_plan` turns a spec into a :class:`~..cloud.plan.Plan` (shape, region,
instances, price, SSH key, firewall source) or raises: spot or image asked for,
no API key (CredentialsError, raised when the client is built), an unknown GPU
or no capacity in ``GET /instance-types``, a price above
``cumulo.cloud.confirm-above-per-hour`` without ``options={"confirm": True}``,
a named SSH key the account lacks, or a client behind NAT (cloud/network.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ... import config
from ...exceptions import SpecError
from ...spec import ClusterSpec
from ..cloud.plan import Plan, check_price, last_resort_idle
from ..cloud.settings import CloudSay, CloudSettings
from .network import client_cidr
from .shapes import choose_instance_type

if TYPE_CHECKING:
    from .adapter import LambdaAdapter

__all__ = ["make_plan", "refuse_unsupported"]


def refuse_unsupported(spec: ClusterSpec) -> None:
    """What Lambda cannot do at all, refused without a request (and without an API key)."""
    spec.require_workers(why="Lambda would still bill the instance that runs its scheduler")
    if spec.spot:
        raise SpecError("Lambda Cloud has no spot instances: drop spot=True")
    if spec.image:
        raise SpecError("choosing an image is not supported for Lambda yet: drop image= "
                        "(instances use Lambda Stack; dask is pinned to your versions at boot)")


async def make_plan(cloud: LambdaAdapter, spec: ClusterSpec, say: CloudSay, settings: CloudSettings) -> Plan:
    """Resolve ``spec`` against live offers and show the offer, or raise why it cannot launch."""
    refuse_unsupported(spec)
    api = cloud.api
    types = await api.instance_types()
    shape, region = choose_instance_type(
        types, gpu=spec.gpu, instance_type=spec.instance_type, gpus_per_instance=spec.gpus_per_worker,
        region=spec.region or config.get("lambda.region"))
    n_instances = max(spec.workers if spec.workers is not None else 1, 1)
    rate = shape.price_per_hour * n_instances
    say(f"offer: {n_instances} x {shape.summary()} in {region}; estimated ${rate:.2f}/h "
        "(Lambda's list price from GET /instance-types, billed until terminated)")
    check_price(rate, spec, settings)
    ssh_key = config.get("lambda.ssh-key-name") or None
    if ssh_key is not None:
        names = await api.ssh_key_names()
        if ssh_key not in names:
            raise SpecError(
                f"cumulo.lambda.ssh-key-name is {ssh_key!r}, but the account has no SSH key of that name "
                f"(it has: {', '.join(names) or 'none'}). Fix the name, or unset it and cumulo makes a key "
                "pair for each cluster.")
    source = client_cidr(cloud.api_url)
    return Plan(instance_type=shape.name, region=region, price_per_hour=shape.price_per_hour,
                instances=n_instances, rate_per_hour=rate, ssh_key=ssh_key, source=source,
                idle_timeout=last_resort_idle(spec, settings), shape=shape)
