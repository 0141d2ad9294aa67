"""A loopback stand-in for AWS's public price list files (the Price List Bulk API's per-region EC2 CSV).

AWS serves ``/offers/v1.0/aws/AmazonEC2/current/<region>/index.csv`` without
credentials. The file's shape, copied here: five preamble lines of
``"Key","Value"`` (FormatVersion, Disclaimer, Publication Date, Version,
OfferCode), then a header row whose first column is ``SKU``, then one row per
SKU x term x price dimension, every field quoted. A region's file holds every
instance type with every operating system, tenancy, capacity status,
preinstalled software and term (OnDemand and the Reserved terms), so most
rows are not the plain on-demand Linux hour; the emulator writes such decoys
beside each stated price (Windows, RHEL, Dedicated, SQL Web, an unused
capacity reservation, a 1-year reserved hourly rate, a capacity block, a
non-GPU type) so that a reader picking the wrong row gets a wrong price.
Like AWS's CDN, it gzips the answer when the client accepts gzip.

``prices``: region -> instance type -> on-demand $/h (stated by the test; a
type also needs a ``SHAPES`` entry). ``fail`` answers HTTP 500.
``requests`` records each path asked for, ``gzipped`` counts the answers sent compressed.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any

from .price_emulator import LoopbackHTTP

#: Column order of the real file (a subset: the columns cumulo reads and some around them; order as AWS's).
HEADER = [
    "SKU", "OfferTermCode", "RateCode", "TermType", "PriceDescription", "EffectiveDate", "StartingRange",
    "EndingRange", "Unit", "PricePerUnit", "Currency", "RelatedTo", "LeaseContractLength", "PurchaseOption",
    "OfferingClass", "Product Family", "serviceCode", "Location", "Location Type", "Instance Type",
    "Current Generation", "Instance Family", "vCPU", "Physical Processor", "Clock Speed", "Memory", "Storage",
    "Network Performance", "Processor Architecture", "Tenancy", "Operating System", "License Model", "usageType",
    "operation", "CapacityStatus", "GPU", "GPU Memory", "MarketOption", "Pre Installed S/W", "Region Code",
    "serviceName",
]
#: instance type -> (GPUs, vCPUs, memory as the file writes it, total GPU memory as the file writes it)
SHAPES = {
    "g4dn.xlarge": (1, 4, "16 GiB", "16 GB"), "g5.xlarge": (1, 4, "16 GiB", "24 GB"),
    "g5.12xlarge": (4, 48, "192 GiB", "96 GB"), "g6.xlarge": (1, 4, "16 GiB", "24 GB"),
    "p4de.24xlarge": (8, 96, "1152 GiB", "640 GB"), "p5e.48xlarge": (8, 192, "2048 GiB", "1128 GB"),
    "m5.large": (0, 2, "8 GiB", "NA"),
}
LOCATIONS = {"us-east-1": "US East (N. Virginia)", "us-west-2": "US West (Oregon)"}
PUBLISHED = "2026-12-01T18:22:31Z"


def _rows(region: str, itype: str, price: float) -> list[dict[str, str]]:
    gpus, vcpus, memory, gpu_memory = SHAPES[itype]
    base = {
        "SKU": f"SKU{zlib.crc32(f'{region}{itype}'.encode()):012d}", "OfferTermCode": "JRTCKXETXF",
        "TermType": "OnDemand", "EffectiveDate": "2026-12-01", "StartingRange": "0", "EndingRange": "Inf",
        "Unit": "Hrs", "Currency": "USD", "Product Family": "Compute Instance", "serviceCode": "AmazonEC2",
        "Location": LOCATIONS.get(region, region), "Location Type": "AWS Region", "Instance Type": itype,
        "Current Generation": "Yes", "Instance Family": "GPU instance", "vCPU": str(vcpus), "Memory": memory,
        "Tenancy": "Shared", "Operating System": "Linux", "License Model": "No License required",
        "usageType": f"BoxUsage:{itype}", "operation": "RunInstances", "CapacityStatus": "Used",
        "GPU": str(gpus) if gpus else "NA", "GPU Memory": gpu_memory, "MarketOption": "OnDemand",
        "Pre Installed S/W": "NA", "Region Code": region, "serviceName": "Amazon Elastic Compute Cloud",
    }

    def row(p: float, **kw: str) -> dict[str, str]:
        out = {**base, **kw, "PricePerUnit": f"{p:.10f}"}
        out["PriceDescription"] = f"${p} per On Demand {out['Operating System']} {itype} Instance Hour"
        return out

    return [
        row(price * 1.8, **{"Operating System": "Windows", "operation": "RunInstances:0002",
                            "License Model": "No License required"}),
        row(price * 1.1, **{"Operating System": "RHEL", "operation": "RunInstances:0010"}),
        row(price * 1.1, Tenancy="Dedicated", usageType=f"DedicatedUsage:{itype}"),
        row(price * 2.0, **{"Pre Installed S/W": "SQL Web", "operation": "RunInstances:0200"}),
        row(0.0, CapacityStatus="UnusedCapacityReservation"),
        row(price * 0.6, TermType="Reserved", LeaseContractLength="1yr", PurchaseOption="No Upfront",
            OfferingClass="standard", Unit="Hrs"),
        row(price * 0.9, MarketOption="CapacityBlock"),
        row(price),  # the plain on-demand Linux hour, after its decoys
    ]


def price_list(region: str, prices: dict[str, float]) -> bytes:
    """One region's price list file, as AWS writes it."""
    buf = io.StringIO()
    # AWS's files quote every field; a reader must depend neither on that nor on the line ending, so
    # us-west-2's file quotes only where CSV needs it and ends its lines with "\r\n"
    west = region == "us-west-2"
    out = csv.writer(buf, quoting=csv.QUOTE_MINIMAL if west else csv.QUOTE_ALL, lineterminator="\r\n" if west else "\n")
    for key, value in (("FormatVersion", "v1.0"), ("Disclaimer", "This pricing list is for informational purposes "
                       "only."), ("Publication Date", PUBLISHED), ("Version", "20261201182231"),
                       ("OfferCode", "AmazonEC2")):
        out.writerow([key, value])
    out.writerow(HEADER)
    rows = [r for itype, p in sorted(prices.items()) for r in _rows(region, itype, p)]
    rows += _rows(region, "m5.large", 0.096)
    for r in rows:
        out.writerow([r.get(c, "") for c in HEADER])
    return buf.getvalue().encode()


class AwsPriceList(LoopbackHTTP):
    """Serve the files on 127.0.0.1:<free port>; ``url`` goes into ``cumulo.aws.price-list-url``."""

    def __init__(self, prices: dict[str, dict[str, float]]) -> None:
        self.prices = prices
        self.fail = False
        self.requests: list[str] = []
        #: answers sent gzipped (the client asked for it, as AWS's CDN answers)
        self.gzipped = 0
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                emu.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                status, body, ctype = 404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml"
                if emu.fail:
                    status, body = 500, b"<Error><Code>InternalError</Code></Error>"
                elif parts[:5] == ["offers", "v1.0", "aws", "AmazonEC2", "current"] and len(parts) == 7 \
                        and parts[6] == "index.csv" and parts[5] in emu.prices:
                    status, body, ctype = 200, price_list(parts[5], emu.prices[parts[5]]), "text/csv"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if status == 200 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
                    body = gzip.compress(body)
                    self.send_header("Content-Encoding", "gzip")
                    emu.gzipped += 1
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)
        self.url = f"{self.base}/offers/v1.0/aws/AmazonEC2/current/{{region}}/index.csv"
