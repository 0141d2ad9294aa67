"""The vCPU quotas an Azure launch needs, checked before anything is created (the compute usages API).

Azure grants vCPUs per VM family per region (``standardNCADSA100v4Family``)
and a regional total (``cores``) for regular-priority VMs, and one regional
total for Spot VMs whatever their family (``lowPriorityCores``, "Total Regional
Low-priority vCPUs" / "Spot vCPUs" in the portal). A VM beyond its quota is
refused only when it is created, after part of the cluster may already run.
:func:`check_quota` reads the region's usages once and refuses with the
numbers and how to ask for more. A usage that cannot be read (an error, or a
quota ARM does not list) is said in one line and the launch goes on: the VM's
own refusal is still a QuotaError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...exceptions import CumuloError, QuotaError
from ..base import Say

if TYPE_CHECKING:
    from .api import Azure

__all__ = ["LOW_PRIORITY", "REGIONAL", "check_quota", "needs"]

#: The usage name of a region's total vCPUs (regular priority).
REGIONAL = "cores"
#: The usage name of a region's Spot (low-priority) vCPUs, every family together.
LOW_PRIORITY = "lowPriorityCores"


def needs(*, family: str | None, regular: int, spot: int) -> dict[str, int]:
    """The vCPUs a launch takes of each quota: ``regular`` of the family's and the region's, ``spot`` of the
    region's low-priority vCPUs."""
    out: dict[str, int] = {}
    if regular:
        if family:
            out[family] = regular
        out[REGIONAL] = regular
    if spot:
        out[LOW_PRIORITY] = spot
    return out


def _how_to_ask(name: str, region: str) -> str:
    if name == LOW_PRIORITY:
        return (f"ask for more Spot vCPUs in the Azure portal (Quotas > Compute, 'Total Regional Spot vCPUs' of "
                f"{region}; ARM calls it {LOW_PRIORITY}), or pass spot=False (regular priority, the family's "
                "quota), or ask for fewer or smaller VMs, or another region")
    return ("ask for more in the Azure portal (Subscriptions > Usage + quotas), or ask for fewer or smaller VMs, "
            "or another region")


async def check_quota(azure: Azure, region: str, *, wanted: Mapping[str, int], say: Say) -> None:
    """QuotaError when the vCPUs ``wanted`` of a quota (usage name -> vCPUs, see :func:`needs`) exceed what the
    subscription has free in ``region``."""
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
    for name, vcpus in wanted.items():
        if name not in found:
            say(f"Azure lists no vCPU quota called {name} in {region}; going on")
            continue
        data = found[name]
        limit, used = int(data.get("limit", 0)), int(data.get("currentValue", 0))
        what = data.get("name", {}).get("localizedValue") or name
        if used + vcpus > limit:
            raise QuotaError(
                f"this cluster needs {vcpus} vCPUs of '{what}' in {region}, and the subscription has {limit - used} "
                f"free (limit {limit}, {used} in use): {_how_to_ask(name, region)}")
        say(f"quota: {vcpus} of {limit - used} free vCPUs of '{what}' in {region}")
