"""The Spot price of one VM size in one region, read when a launch is planned: what a Spot VM is billed at.

Azure's Retail Prices API (``cumulo.catalog.azure-url``, public, no key)
publishes Spot meters beside the pay-as-you-go ones: the same ``armSkuName``
and ``armRegionName``, a ``skuName`` ending in " Spot", ``type``
"Consumption". The plan asks it for the one size and region it launches
(one filtered request), as AWS's plan reads its spot prices live. When the
API cannot be reached, the catalog's Spot price for that region is used (a
``cumulo prices --refresh`` put it there), labelled with its date. With
neither, there is no Spot price to bill at: the caller falls back to regular
priority or refuses, rather than bill a Spot VM at the pay-as-you-go price.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ... import config
from ...cost import catalog
from ..base import Say
from ..cloud.market import SpotPrice

__all__ = ["from_catalog", "from_retail_api", "is_spot_meter", "spot_price"]


def is_spot_meter(item: dict[str, Any]) -> bool:
    """Whether a Retail Prices API item is a Linux Spot VM's hourly price (not Windows, not Low Priority)."""
    return (str(item.get("skuName", "")).endswith(" Spot") and "Windows" not in str(item.get("productName", ""))
            and item.get("unitOfMeasure") == "1 Hour" and item.get("type", "Consumption") == "Consumption")


def _since(item: dict[str, Any]) -> datetime:
    raw = str(item.get("effectiveStartDate") or "")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(timezone.utc)


def from_retail_api(vm_size: str, region: str) -> SpotPrice | None:
    """The Spot price the Retail Prices API publishes for ``vm_size`` in ``region``; None when it lists none.

    Raises httpx's errors (and ValueError for an answer that is not JSON) when the API cannot be read.
    """
    import httpx  # only when a Spot launch is planned

    base = str(config.get("catalog.azure-url")).rstrip("/")
    params: dict[str, str] | None = {"$filter": (
        f"serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and armRegionName eq '{region}' "
        f"and armSkuName eq '{vm_size}'")}
    url: str | None = base
    found: list[dict[str, Any]] = []
    with httpx.Client(timeout=float(config.get("catalog.timeout", 10)), follow_redirects=False) as client:
        for _ in range(5):  # a filtered answer is one page; a bounded walk all the same
            if url is None:
                break
            resp = client.get(url, params=params)
            resp.raise_for_status()
            body = resp.json()
            found += [i for i in body.get("Items", []) if i.get("armSkuName") == vm_size
                      and i.get("armRegionName") == region and is_spot_meter(i)]
            url, params = body.get("NextPageLink"), None
    if not found:
        return None
    item = max(found, key=_since)  # the meter in effect now
    since = _since(item)
    return SpotPrice(region, float(item["retailPrice"]), since,
                     basis=f"Spot price of {region} from Azure's retail prices API ({base}), in effect since "
                           f"{since.strftime('%Y-%m-%d')}")


def from_catalog(vm_size: str, region: str) -> SpotPrice | None:
    """The catalog's Spot price for ``vm_size`` in ``region`` exactly (a refresh's), labelled; None without one."""
    frame = catalog.prices(provider="azure", region=region)
    hit = frame[(frame["instance_type"] == vm_size) & (frame["region"] == region)].dropna(subset=["spot_per_hour"])
    if hit.empty:
        return None
    row = hit.iloc[0]
    as_of = str(row["as_of"])
    try:
        since = datetime.fromisoformat(as_of).replace(tzinfo=timezone.utc)
    except ValueError:
        since = datetime.now(timezone.utc)
    return SpotPrice(region, float(row["spot_per_hour"]), since,
                     basis=f"Spot price of {region}, {row['source']}, as of {as_of}")


def spot_price(vm_size: str, region: str, *, say: Say) -> SpotPrice | None:
    """The Spot price to bill ``vm_size`` in ``region`` at: the Retail Prices API's, else the catalog's; None
    (after a line saying why) when neither has one."""
    import httpx

    try:
        live = from_retail_api(vm_size, region)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:  # unreadable: the catalog's, if any
        say(f"could not read the Spot price of {vm_size} in {region} from Azure's retail prices API "
            f"({type(exc).__name__}); using the catalog's")
        live = None
    else:
        if live is None:
            say(f"Azure's retail prices API lists no Spot price for {vm_size} in {region}")
            return None
        return live
    cached = from_catalog(vm_size, region)
    if cached is None:
        say(f"the catalog has no Spot price for {vm_size} in {region} either (`cumulo prices --refresh` with "
            f"{region} in cumulo.catalog.azure-regions fetches it)")
    return cached

