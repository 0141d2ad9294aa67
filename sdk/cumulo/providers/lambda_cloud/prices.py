"""Lambda's live list prices as catalog rows, fetched through the same API client as everything else.

``cumulo prices --refresh`` reads ``GET /instance-types`` here, at
``cumulo.catalog.lambda-url``, through :class:`~.api.LambdaApi` and so through
cumulo's HTTP layer: the key is sent only in the Authorization header and
scrubbed from every error text, even when a server echoes it back.
"""

from __future__ import annotations

import re
from typing import Any

from ... import config
from ...aio import blocking
from .api import LambdaApi
from .shapes import InstanceType

__all__ = ["gpu_model", "price_rows", "price_rows_async"]

_GPU_RE = re.compile(r"\b(GH200|H200|H100|A100|A10G?|L40S|L4|T4|A6000|V100|B200)\b", re.I)
_MEMORY_RE = re.compile(r"(\d+)\s*GB")


def gpu_model(description: str, memory_gb: float | None) -> str | None:
    """The catalog's GPU model name from Lambda's description ("1x A100 (40 GB PCIe)" -> "A100-40GB")."""
    m = _GPU_RE.search(description)
    if not m:
        return None
    name = m.group(1).upper()
    if name == "A100" and memory_gb:
        return f"A100-{int(memory_gb)}GB"
    return name


def _row(t: InstanceType, *, source: str, today: str) -> dict[str, Any] | None:
    mem = _MEMORY_RE.search(t.description)
    mem_gb = float(mem.group(1)) if mem else None
    model = gpu_model(t.description, mem_gb)
    if not t.gpus or model is None:
        return None
    return {
        "provider": "lambda", "instance_type": t.name, "gpu_model": model, "gpu_count": t.gpus,
        "gpu_memory_gb": mem_gb, "vcpus": t.vcpus, "ram_gb": t.memory_gib,
        "on_demand_per_hour": t.price_per_hour, "spot_per_hour": None,
        "region": "all", "source": source, "as_of": today,
    }


async def price_rows_async(today: str) -> list[dict[str, Any]]:
    """One catalog row per GPU instance type Lambda lists (prices hold in every region)."""
    base = str(config.get("catalog.lambda-url")).rstrip("/")
    timeout = float(config.get("catalog.timeout") or 10)
    # One retry: a refresh that fails keeps the last good prices, so it need not wait out an outage.
    async with LambdaApi(base_url=base, timeout=timeout, max_retries=1) as api:
        types = await api.instance_types()
    rows = (_row(t, source=f"{base}/instance-types", today=today) for t in types.values())
    return [r for r in rows if r is not None]


def price_rows(today: str) -> list[dict[str, Any]]:
    """Blocking form of :func:`price_rows_async` (catalog.refresh is synchronous)."""
    return blocking(price_rows_async(today))
