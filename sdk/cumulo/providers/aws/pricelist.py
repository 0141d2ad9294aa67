"""AWS's GPU prices for ``cumulo prices --refresh``: on-demand from the public price list, spot per zone.

On-demand: AWS's public price list files (the Price List Bulk API's files,
``cumulo.aws.price-list-url``, one CSV per region) need no credentials and no
``pricing:GetProducts`` permission, so every user gets current on-demand prices.
The files are large (every instance type, operating system, tenancy and
reserved term of a region), so the file is streamed: each line is tested as
bytes for an on-demand row of a GPU family cumulo maps (shapes.FAMILIES)
before it is parsed, and nothing but those rows is kept: memory stays flat
and the CPU work is one byte search per line. A row counts when it is the
plain Linux, shared-tenancy, no-preinstalled-software, used-capacity hourly
price in USD, as the EC2 console shows it.

Spot: where boto3's credential chain finds credentials, the latest
DescribeSpotPriceHistory price (Linux/UNIX) per zone of each type priced
above becomes a row of its own, whose ``region`` is the zone, whose
``as_of`` is the time AWS set the price and whose source says "spot price";
it carries the region's on-demand price too, so nothing that reads
on-demand prices can take a spot price for one. Without credentials, or when
AWS refuses them, the refresh keeps the on-demand rows and says in one line
why spot prices are missing (no secret in it).
"""

from __future__ import annotations

import csv
import re
from datetime import datetime, timezone
from typing import Any

from ... import config
from ...aio import blocking
from ...cost import catalog
from ...exceptions import CumuloError, ProviderError, SpecError
from .shapes import FAMILIES

__all__ = ["PriceRows", "gpu_model", "on_demand_rows", "price_regions", "price_rows", "spot_rows"]

#: GPU memory (GB) per GPU, by the catalog's model name (the price list has only a total, in varying units).
_GPU_MEMORY_GB = {"T4": 16, "T4G": 16, "A10G": 24, "L4": 24, "L40S": 48, "A100-40GB": 40, "A100-80GB": 80,
                  "H100": 80, "H200": 141}
#: Families whose GPU name in the catalog is more exact than shapes.FAMILIES' key.
_EXACT_MODEL = {"p4d": "A100-40GB", "p4de": "A100-80GB"}
_MODEL_OF_FAMILY = {family: _EXACT_MODEL.get(family, model) for model, families in FAMILIES.items()
                    for family in families}
_FAMILY_ALTERNATIVES = b"|".join(re.escape(f.encode()) for f in sorted(_MODEL_OF_FAMILY))
#: A field holding an instance type of a mapped family, found in a raw line before it is parsed: quoted, as AWS
#: quotes every field (the search then skips ahead by the quote, fast), or unquoted (slower, never assumed).
_TYPE_RE = {True: re.compile(rb'"(?:' + _FAMILY_ALTERNATIVES + rb')\.[0-9a-z-]+"'),
            False: re.compile(rb'(?:^|,)"?(?:' + _FAMILY_ALTERNATIVES + rb')\.[0-9a-z-]+"?(?:,|$)')}
#: Price list columns (case-insensitive) a row is read from, and the values a plain on-demand Linux hour has.
_REQUIRED = ("termtype", "instance type", "priceperunit", "unit", "currency", "tenancy", "operating system",
             "capacitystatus", "pre installed s/w", "vcpu", "memory", "gpu")
_MUST = {"termtype": ("OnDemand",), "tenancy": ("Shared",), "operating system": ("Linux",),
         "capacitystatus": ("Used",), "pre installed s/w": ("NA", ""), "unit": ("Hrs",), "currency": ("USD",)}
#: Checked when the file has them: the plain RunInstances operation, no license, ordinary (not capacity block).
_MUST_IF_PRESENT = {"operation": ("RunInstances",), "license model": ("No License required",),
                    "marketoption": ("OnDemand", ""), "product family": ("Compute Instance",)}


class PriceRows(list):  # type: ignore[type-arg]
    """Catalog rows, plus ``note``: one line the refresh report prints beside the count (why rows are missing)."""

    note: str = ""


def gpu_model(instance_type: str) -> str | None:
    """The catalog's GPU model of an instance type ("p4de.24xlarge" -> "A100-80GB"); None for a family cumulo
    does not map."""
    return _MODEL_OF_FAMILY.get(instance_type.split(".", 1)[0])


def price_regions() -> list[str]:
    """``cumulo.aws.price-regions``; unset: the regions of the bundled AWS prices and ``cumulo.aws.region``."""
    configured = config.get("aws.price-regions")
    if configured:
        return sorted(set(configured))
    snap = catalog.snapshot()
    found = set(snap[snap["provider"] == "aws"]["region"]) - {"all"}
    if config.get("aws.region"):
        found.add(str(config.get("aws.region")))
    return sorted(found) or ["us-east-1"]


def _url(region: str) -> str:
    template = str(config.get("aws.price-list-url"))
    if "{region}" not in template:
        raise SpecError(f"cumulo.aws.price-list-url is {template!r}: it must hold {{region}} where the region goes, "
                        "as AWS's price list files do (.../AmazonEC2/current/{region}/index.csv)")
    return template.replace("{region}", region)


def _lines(chunks: Any) -> Any:
    """Lines (bytes, without "\n" or "\r\n") of a byte stream."""
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part.rstrip(b"\r")
    if rest:
        yield rest.rstrip(b"\r")


def _row(fields: list[str], col: dict[str, int], region: str, source: str, today: str) -> dict[str, Any] | None:
    def get(name: str) -> str:
        return fields[col[name]].strip() if name in col and col[name] < len(fields) else ""

    if any(get(k) not in ok for k, ok in _MUST.items()):
        return None
    if any(k in col and get(k) not in ok for k, ok in _MUST_IF_PRESENT.items()):
        return None
    if "region code" in col and get("region code") not in (region, ""):
        return None
    itype = get("instance type")
    model = gpu_model(itype)
    try:
        price, gpus = float(get("priceperunit")), int(float(get("gpu")))
        vcpus = int(float(get("vcpu")))
        ram = float(get("memory").split()[0].replace(",", ""))
    except (ValueError, IndexError):
        return None
    if model is None or price <= 0 or gpus <= 0:
        return None
    return {"provider": "aws", "instance_type": itype, "gpu_model": model, "gpu_count": gpus,
            "gpu_memory_gb": _GPU_MEMORY_GB.get(model), "vcpus": vcpus, "ram_gb": ram, "on_demand_per_hour": price,
            "spot_per_hour": None, "region": region, "source": source, "as_of": today}


def on_demand_rows(client: Any, region: str, today: str) -> list[dict[str, Any]]:
    """The on-demand Linux prices of the mapped GPU types in ``region``, streamed from the public price list.

    ``client``: an ``httpx.Client``. ProviderError when the file cannot be read or is not a price list.
    """
    url = _url(region)
    with client.stream("GET", url) as resp:
        if resp.status_code != 200:
            raise ProviderError(f"AWS's price list for {region} answered HTTP {resp.status_code} ({url})")
        preamble: dict[str, str] = {}
        col: dict[str, int] = {}
        gpu_type = _TYPE_RE[True]
        found: dict[str, dict[str, Any]] = {}
        source = url
        for line in _lines(resp.iter_bytes()):
            if not col:  # the preamble ("Publication Date","..."), then the header, whose first column is SKU
                fields = next(csv.reader([line.decode("utf-8", "replace")]), [])
                if fields and fields[0].strip().upper() == "SKU":
                    col = {name.strip().lower(): i for i, name in enumerate(fields)}
                    gpu_type = _TYPE_RE[line.startswith(b'"')]
                    missing = [c for c in _REQUIRED if c not in col]
                    if missing:
                        raise ProviderError(f"{url} is not an EC2 price list: no column {', '.join(missing)}")
                    published = preamble.get("Publication Date", "")[:10]
                    source = f"{url} (AWS price list published {published})" if published else url
                elif len(fields) >= 2:
                    preamble[fields[0]] = fields[1]
                continue
            if not gpu_type.search(line) or b"OnDemand" not in line:
                continue  # most of the file: other types, reserved terms
            fields = next(csv.reader([line.decode("utf-8", "replace")]), [])
            row = _row(fields, col, region, source, today)
            if row is not None:
                found.setdefault(row["instance_type"], row)
    if not col:
        raise ProviderError(f"{url} is not an EC2 price list: no header row (SKU, ...)")
    return sorted(found.values(), key=lambda r: r["instance_type"])


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return " ".join(text.split())


def spot_rows(on_demand: list[dict[str, Any]]) -> PriceRows:
    """The latest spot price per zone of each type in ``on_demand`` (its rows give region and on-demand price).

    Never raises for AWS's sake: no credentials, refused ones or a failed call leave ``note`` saying so
    (with the spot rows of the regions read before).
    """
    # heavy: boto3, only where AWS is used
    from .api import Aws, translate

    out = PriceRows()
    try:
        aws = Aws()
        creds = aws.session.get_credentials()
    except Exception as exc:  # botocore's: a profile that does not exist, an SSO token that cannot be refreshed
        out.note = f"spot prices not fetched ({translate(exc, 'reading AWS credentials')}); on-demand only"
        return out
    if creds is None:
        out.note = ("spot prices need AWS credentials (boto3 found none: AWS_PROFILE, `aws sso login`, environment "
                    "variables or an instance role); on-demand only")
        return out
    frozen = creds.get_frozen_credentials()
    secrets = [frozen.access_key, frozen.secret_key, frozen.token or ""]
    by_region: dict[str, dict[str, dict[str, Any]]] = {}
    for row in on_demand:
        by_region.setdefault(row["region"], {})[row["instance_type"]] = row
    for region, types in sorted(by_region.items()):
        try:
            history = blocking(aws.pages(
                "ec2", region, "describe_spot_price_history", "SpotPriceHistory", InstanceTypes=sorted(types),
                ProductDescriptions=["Linux/UNIX"], StartTime=datetime.now(timezone.utc)))
        except CumuloError as exc:  # api.py's words for AWS's refusal: never a credential, but scrubbed anyway
            out.note = _scrub(f"spot prices not fetched ({type(exc).__name__}: {exc}); on-demand only", secrets)
            return out
        latest: dict[tuple[str, str], tuple[datetime, float]] = {}
        for item in history:
            key, when = (str(item["InstanceType"]), str(item["AvailabilityZone"])), item["Timestamp"]
            if key[0] in types and (key not in latest or when > latest[key][0]):
                latest[key] = (when, float(item["SpotPrice"]))
        for (itype, zone), (when, price) in sorted(latest.items()):
            stamp = when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            out.append({**types[itype], "spot_per_hour": price, "region": zone, "as_of": stamp,
                        "source": f"spot price of {zone} since {stamp} (DescribeSpotPriceHistory, Linux/UNIX); "
                                  f"on-demand from {types[itype]['source']}"})
    return out


def price_rows(today: str) -> PriceRows:
    """Every AWS row of a refresh: on-demand per region of :func:`price_regions`, then spot per zone.

    Raises (the catalog keeps the last good AWS rows) when a region's price list cannot be read.
    """
    import httpx

    timeout = float(config.get("catalog.timeout") or 10)
    rows: list[dict[str, Any]] = []
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for region in price_regions():
            try:
                rows += on_demand_rows(client, region, today)
            except httpx.HTTPError as exc:
                raise ProviderError(f"AWS's price list for {region} could not be read ({type(exc).__name__}) "
                                    f"from {_url(region)}") from None
    if not rows:
        raise ProviderError(f"AWS's price list has no GPU type cumulo maps in {', '.join(price_regions())}")
    spot = spot_rows(rows)
    out = PriceRows(rows + list(spot))
    out.note = spot.note
    return out
