"""The vCPU quotas an Azure launch needs, checked before anything is created (the compute usages API).

Azure grants vCPUs per VM family per region (``standardNCADSA100v4Family``)
and a regional total (``cores``); a VM beyond either is refused only when it is
created, after part of the cluster may already run. :func:`check_quota` reads
both for the region and refuses with the numbers and how to ask for more. A
usage that cannot be read (an error, or a family ARM does not list) is said in
one line and the launch goes on: the VM's own refusal is still a QuotaError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...exceptions import CumuloError, QuotaError
from ..base import Say

if TYPE_CHECKING:
    from .api import Azure

__all__ = ["REGIONAL", "check_quota"]

#: The usage name of a region's total vCPUs.
REGIONAL = "cores"


async def check_quota(azure: Azure, region: str, *, family: str | None, vcpus: int, say: Say) -> None:
    """QuotaError when ``vcpus`` more of ``family`` (or of the region's total) exceed what the subscription has."""
    compute = azure.compute
    try:
        usages = await azure.call(f"reading the vCPU quotas of {region}",
                                  lambda: list(compute.usage.list(region)))
    except CumuloError as exc:
        say(f"could not read the vCPU quotas of {region} ({exc}); going on: a VM over quota is refused when "
            "it is created")
        return
    found: dict[str, dict[str, Any]] = {}
    for usage in usages:
        data = usage.as_dict() if hasattr(usage, "as_dict") else dict(usage)
        found[str(data.get("name", {}).get("value", ""))] = data
    for name in [n for n in (family, REGIONAL) if n]:
        if name not in found:
            say(f"Azure lists no vCPU quota called {name} in {region}; going on")
            continue
        data = found[name]
        limit, used = int(data.get("limit", 0)), int(data.get("currentValue", 0))
        what = data.get("name", {}).get("localizedValue") or name
        if used + vcpus > limit:
            raise QuotaError(
                f"this cluster needs {vcpus} vCPUs of '{what}' in {region}, and the subscription has {limit - used} "
                f"free (limit {limit}, {used} in use): ask for more in the Azure portal (Subscriptions > Usage + "
                "quotas), or ask for fewer or smaller VMs, or another region")
        say(f"quota: {vcpus} of {limit - used} free vCPUs of '{what}' in {region}")
