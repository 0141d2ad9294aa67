"""A loopback stand-in for the two live price sources: Lambda's GET /instance-types and Azure's retail prices API.

Only the response shapes cumulo.cost.catalog reads are emulated (see DESIGN.md for
Lambda's; Azure's is ``{"Items": [...], "NextPageLink": ...}``). ``fail`` makes
every request answer HTTP 500, to check that a failed refresh keeps old data;
``echo`` makes a refused key come back inside the error message (a careless
server), to check that cumulo redacts it before printing or caching anything.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

KEY = "test-key-not-secret"

LAMBDA_TYPES = {
    "gpu_1x_h100_sxm5": {
        "instance_type": {"name": "gpu_1x_h100_sxm5", "description": "1x H100 (80 GB SXM5)",
                          "price_cents_per_hour": 299,
                          "specs": {"vcpus": 26, "memory_gib": 225, "storage_gib": 2750, "gpus": 1}},
        "regions_with_capacity_available": [{"name": "us-east-1", "description": "Virginia, USA"}],
    },
    "gpu_8x_a100_80gb_sxm4": {
        "instance_type": {"name": "gpu_8x_a100_80gb_sxm4", "description": "8x A100 (80 GB SXM4)",
                          "price_cents_per_hour": 1432,
                          "specs": {"vcpus": 240, "memory_gib": 1800, "storage_gib": 19500, "gpus": 8}},
        "regions_with_capacity_available": [],
    },
    "cpu_4x_general": {
        "instance_type": {"name": "cpu_4x_general", "description": "CPU only", "price_cents_per_hour": 10,
                          "specs": {"vcpus": 4, "memory_gib": 16, "storage_gib": 100, "gpus": 0}},
        "regions_with_capacity_available": [],
    },
}


def azure_item(sku: str, price: float, *, spot: bool = False, windows: bool = False,
               region: str = "eastus") -> dict[str, Any]:
    """One item of Azure's retail prices API, as it lists a VM size's hourly meter (Spot: skuName ends " Spot")."""
    return {
        "currencyCode": "USD", "retailPrice": price, "unitPrice": price, "armRegionName": region,
        "location": "US East", "meterName": sku.replace("Standard_", "") + (" Spot" if spot else ""),
        "productName": "Virtual Machines Series" + (" Windows" if windows else ""),
        "skuName": sku.replace("Standard_", "") + (" Spot" if spot else ""), "serviceName": "Virtual Machines",
        "armSkuName": sku, "type": "Consumption", "unitOfMeasure": "1 Hour", "isPrimaryMeterRegion": True,
        "effectiveStartDate": "2026-11-01T00:00:00Z",
    }


AZURE_PAGES = [
    [azure_item("Standard_NC24ads_A100_v4", 3.5), azure_item("Standard_NC24ads_A100_v4", 0.9, spot=True),
     azure_item("Standard_NC24ads_A100_v4", 4.9, windows=True)],
    [azure_item("Standard_ND96isr_H200_v5", 84.8), azure_item("Standard_Unknown_v9", 1.0)],
]


_Served = TypeVar("_Served", bound="LoopbackHTTP")


class LoopbackHTTP:
    """An HTTP server on 127.0.0.1:<free port>, serving in a thread for the length of a ``with`` block."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self: _Served) -> _Served:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class PriceEmulator(LoopbackHTTP):
    """Serve both APIs on 127.0.0.1:<free port>; ``lambda_url``/``azure_url`` go into cumulo.catalog.* config."""

    def __init__(self, azure_pages: list[list[dict[str, Any]]] | None = None) -> None:
        #: the retail prices API's pages (Items), in order
        self.azure_pages = azure_pages if azure_pages is not None else AZURE_PAGES
        self.fail = False
        self.echo = False
        self.requests: list[str] = []
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                emu.requests.append(self.path)
                if emu.fail:
                    return self._send(500, {"error": {"code": "global/unknown", "message": "emulated outage"}})
                url = urlsplit(self.path)
                if url.path == "/lambda/api/v1/instance-types":
                    auth = self.headers.get("Authorization")
                    if auth != f"Bearer {KEY}":
                        echoed = f" (received {auth})" if emu.echo else ""
                        return self._send(401, {"error": {"code": "global/invalid-api-key",
                                                          "message": f"API key was invalid{echoed}"}})
                    return self._send(200, {"data": LAMBDA_TYPES})
                if url.path == "/azure/api/retail/prices":
                    page = int(parse_qs(url.query).get("page", ["0"])[0])
                    pages = emu.azure_pages
                    nxt = f"{emu.base}/azure/api/retail/prices?page={page + 1}" if page + 1 < len(pages) else None
                    return self._send(200, {"BillingCurrency": "USD", "Items": pages[page],
                                            "NextPageLink": nxt, "Count": len(pages[page])})
                return self._send(404, {"error": {"code": "not-found", "message": self.path}})

        super().__init__(Handler)
        self.lambda_url = f"{self.base}/lambda/api/v1"
        self.azure_url = f"{self.base}/azure/api/retail/prices"
