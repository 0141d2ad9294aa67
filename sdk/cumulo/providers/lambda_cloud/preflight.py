"""Everything a Lambda launch can be refused for, decided before anything bills (and before any registry row).

:func:`make_plan` turns a spec into a :class:`~..cloud.plan.Plan` (shape, region,
instances, price, image, SSH key, firewall source) or raises: spot asked for, an
image (``image=``: an id or family of ``GET /images``) not offered in the region,
no API key (CredentialsError, raised when the client is built), an unknown GPU
or no capacity in ``GET /instance-types``, a price above
``cumulo.cloud.confirm-above-per-hour`` without ``options={"confirm": True}``,
a named SSH key the account lacks, a client behind NAT (cloud/network.py), or a
region where Lambda applies no firewall (:data:`NO_FIREWALL`): the scheduler's
port would face the internet there, so it is refused when asked for and skipped
when chosen by price.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ... import config
from ...exceptions import SpecError
from ...spec import ClusterSpec
from ..cloud.plan import Plan, check_price, last_resort_idle, last_resort_lease
from ..cloud.settings import CloudSay, CloudSettings
from .network import client_cidr
from .shapes import Offer, choose_image, choose_instance_type

if TYPE_CHECKING:
    from .adapter import LambdaAdapter

__all__ = ["NO_FIREWALL", "make_plan", "refuse_unsupported"]

#: Regions where Lambda's spec says firewall rules (and rulesets) do not apply.
NO_FIREWALL = frozenset({"us-south-1"})


def refuse_unsupported(spec: ClusterSpec) -> None:
    """What Lambda cannot do at all, refused without a request (and without an API key)."""
    spec.require_workers(why="Lambda would still bill the instance that runs its scheduler")
    if spec.spot:
        raise SpecError("Lambda Cloud has no spot instances: drop spot=True")


async def make_plan(cloud: LambdaAdapter, spec: ClusterSpec, say: CloudSay, settings: CloudSettings) -> Plan:
    """Resolve ``spec`` against live offers and show the offer, or raise why it cannot launch."""
    refuse_unsupported(spec)
    api = cloud.api
    types = await api.instance_types()
    asked = spec.region or config.get("lambda.region")
    if asked in NO_FIREWALL:
        raise SpecError(f"Lambda applies no firewall rules in {asked}, so the scheduler's port would be open to "
                        "anyone there: choose another region (or leave region= out and cumulo picks one)")
    skipped = sorted({r for t in types.values() for r in t.regions if r in NO_FIREWALL})
    if skipped:
        if not asked:  # chosen by price: say why the cheapest region may not be the one picked
            say(f"not considering {', '.join(skipped)}: Lambda applies no firewall rules there")
        types = {k: dataclasses.replace(t, regions=tuple(r for r in t.regions if r not in NO_FIREWALL))
                 for k, t in types.items()}
    shape, region = choose_instance_type(
        types, gpu=spec.gpu, instance_type=spec.instance_type, gpus_per_instance=spec.gpus_per_worker,
        region=asked)
    n_instances = max(spec.workers if spec.workers is not None else 1, 1)
    rate = shape.price_per_hour * n_instances
    image = choose_image(await api.images(), spec.image, region, chosen=not asked) if spec.image else None
    say(f"offer: {n_instances} x {shape.summary()} in {region}; estimated ${rate:.2f}/h "
        "(Lambda's list price from GET /instance-types, billed until terminated); image: "
        + (image.summary() if image else "Lambda's default (Lambda Stack)"))
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
                idle_timeout=last_resort_idle(spec, settings), client_lease=last_resort_lease(spec),
                shape=Offer(shape, image))
