"""The account's vCPU quota for a GPU family, read through Service Quotas before anything launches.

AWS counts GPU instances against per-family vCPU quotas (on-demand and spot
separately, G/VT and P families). A launch that needs more than granted
would fail half-way, after the head already bills: so cumulo refuses first,
with the numbers and how to ask for more. Many roles cannot read Service
Quotas (AccessDenied) and some endpoints do not serve it: then one line says
why the quota could not be read, and the launch goes on. An unreadable quota
never blocks a launch.
"""

from __future__ import annotations

from collections.abc import Callable

from ...exceptions import CumuloError, QuotaError
from .api import Aws

__all__ = ["QUOTA_CODES", "check_quota"]

#: (market, family letter) -> Service Quotas code of the vCPU quota (service "ec2").
QUOTA_CODES = {
    ("on-demand", "G"): ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("on-demand", "P"): ("L-417A185B", "Running On-Demand P instances"),
    ("spot", "G"): ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("spot", "P"): ("L-7212CCBC", "All P Spot Instance Requests"),
}


async def check_quota(aws: Aws, region: str, *, instance_type: str, vcpus: int, market: str,
                      say: Callable[[str], None]) -> float | None:
    """The granted vCPUs for ``instance_type``'s family in ``market``; QuotaError when ``vcpus`` exceed it.

    None (after one line saying why) when the quota cannot be read.
    """
    letter = instance_type[:1].upper()
    if (market, letter) not in QUOTA_CODES:
        return None
    code, title = QUOTA_CODES[(market, letter)]
    try:
        answer = await aws.call("service-quotas", region, "get_service_quota", ServiceCode="ec2", QuotaCode=code)
    except CumuloError as exc:
        say(f"could not read the vCPU quota '{title}' in {region} ({exc}); going on without checking it")
        return None
    granted = float(answer.get("Quota", {}).get("Value", 0.0))
    if vcpus > granted:
        raise QuotaError(
            f"this cluster needs {vcpus} vCPUs of '{title}' ({code}) in {region}, and the account is granted "
            f"{granted:g}. Ask for more in the Service Quotas console (EC2 > {title}) or with `aws service-quotas "
            f"request-service-quota-increase --service-code ec2 --quota-code {code} --desired-value {vcpus} "
            f"--region {region}`, or ask for fewer or smaller instances")
    return granted
