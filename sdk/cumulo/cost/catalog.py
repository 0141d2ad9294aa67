"""GPU offers and their prices: a bundled snapshot, refreshed from live sources where they exist.

Money is data: every row names its ``source`` and ``as_of`` date. The snapshot
(``data/prices.csv``, plus the rows each provider bundles: ``Provider.price_file``)
ships with cumulo; ``refresh()`` asks every provider with a live source
(``Provider.live_prices``: Lambda's ``GET /instance-types``, through the
provider's own client, so its key is redacted as everywhere else; AWS's public
price list, and its spot prices per zone where credentials exist) and Azure's
retail prices API (no key, through httpx) and caches what it got, with a
timestamp, in the user data directory (mode 600). A failed source keeps its
last good data and the failure is reported, never hidden. Live rows replace snapshot rows of the same
(provider, instance_type, region).

What a price is travels with it: :func:`prices` gives each row's ``source`` as a label that says
whether it is a list price bundled with cumulo or one fetched by a refresh, where from, and how to
refresh it (:func:`source_label`); the row's ``as_of`` says how old it is. Those two are what an
estimate cites (the sidebar's New cluster form, ``cumulo run``), so a reader can judge the figure.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import config
from ..exceptions import CumuloError, ProviderError, SpecError, did_you_mean
from ..providers import provider_classes

__all__ = [
    "COLUMNS", "RefreshReport", "format_table", "freshness", "live_sources", "no_match", "price_of", "prices",
    "refresh", "report_text", "snapshot", "source_label",
]

COLUMNS = [
    "provider", "instance_type", "gpu_model", "gpu_count", "gpu_memory_gb", "vcpus", "ram_gb",
    "on_demand_per_hour", "spot_per_hour", "region", "source", "as_of",
]
_SNAPSHOT = Path(__file__).parent.parent / "data" / "prices.csv"
#: Price sources that are not (yet) providers, fetched live by ``refresh()`` too.
_PRICE_ONLY_LIVE = ("azure",)
# Azure SKUs we ask the retail API about, with their shape: the snapshot's Azure rows plus these.
_AZURE_EXTRA_SHAPES = {
    "Standard_ND96isr_H200_v5": ("H200", 8, 141, 96, 1850),
}


def live_sources() -> tuple[str, ...]:
    """Sources whose prices ``refresh()`` (``cumulo prices --refresh``) fetches live: every provider that
    declares ``live_prices``, and Azure's retail prices API."""
    return (*sorted(c.name for c in provider_classes() if c.live_prices), *_PRICE_ONLY_LIVE)


def snapshot() -> pd.DataFrame:
    """The bundled price snapshot, as shipped: cumulo's own file and the rows each provider brings."""
    files = [_SNAPSHOT, *(c.price_file for c in provider_classes() if c.price_file)]
    frames = [pd.read_csv(f, comment="#", dtype={"as_of": str}) for f in files]
    return pd.concat([f[COLUMNS] for f in frames], ignore_index=True)


def _cache_path() -> Path:
    configured = config.get("catalog.cache-path")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("cumulo", appauthor=False)) / "prices-cache.json"


def _read_cache() -> dict[str, Any]:
    path = _cache_path()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"sources": {}, "rows": []}


def source_label(provider: str, page: str, *, live: bool = False) -> str:
    """What a catalog price is, where it comes from and how to refresh it, in words an estimate can cite.

    The estimate lines show it followed by the row's ``as_of`` date ("..., 2025"), so it ends
    with the page: 'list price bundled with cumulo (`cumulo prices --refresh` fetches current
    ones) from https://lambda.ai/pricing'. ``live``: a price fetched by ``refresh()``.
    """
    if live:
        return f"price fetched by `cumulo prices --refresh` from {page}"
    how = ("`cumulo prices --refresh` fetches current ones" if provider in live_sources()
           else f"no live {provider} source: check the page")
    return f"list price bundled with cumulo ({how}) from {page}"


#: A zone's name: its region's and a letter ("us-east-1b"). Rows priced per zone are AWS's spot prices.
_ZONE = re.compile(r".*\d[a-z]")


def prices(
    gpu: str | None = None, provider: str | None = None, region: str | None = None, *, labelled: bool = True,
    zones: bool = False,
) -> pd.DataFrame:
    """GPU offers as a DataFrame (columns in ``COLUMNS`` plus ``per_gpu_hour``), cheapest $/GPU-hour first.

    gpu: model prefix, case-insensitive ("a100" matches A100-40GB and A100-80GB);
    provider: "lambda", "aws", "azure", "gcp"; region: exact region (rows priced for
    "all" regions, and with ``zones`` the region's zones' rows, match too). Live rows from the
    last ``refresh()`` replace snapshot rows.
    ``labelled``: ``source`` as :func:`source_label` words it (bundled or fetched, page, how to
    refresh); False leaves the bare page, as the snapshot and the cache hold it.
    ``zones``: also the rows priced per zone (a refresh's spot prices of AWS's zones, "us-east-1b"), as
    `cumulo prices` shows them; off, so that an estimate or an offer never takes a zone's row for a region's.
    """
    frame = snapshot()
    if labelled:
        frame["source"] = [source_label(p, s) for p, s in zip(frame["provider"], frame["source"])]
    cached = _read_cache().get("rows") or []
    if cached:
        live = pd.DataFrame(cached, columns=COLUMNS)
        if labelled:
            live["source"] = [source_label(p, s, live=True) for p, s in zip(live["provider"], live["source"])]
        replaced = set(zip(live["provider"], live["instance_type"], live["region"]))
        keep = [k not in replaced for k in zip(frame["provider"], frame["instance_type"], frame["region"])]
        frame = pd.concat([frame[keep], live], ignore_index=True)
    if not zones:
        frame = frame[~frame["region"].astype(str).str.fullmatch(_ZONE)]
    if gpu:
        frame = frame[frame["gpu_model"].str.lower().str.startswith(gpu.lower().replace(" ", ""))]
    if provider:
        frame = frame[frame["provider"] == provider.lower()]
    if region:
        zone = frame["region"].astype(str).str.fullmatch(re.escape(region) + "[a-z]")
        frame = frame[(frame["region"] == region) | (frame["region"] == "all") | zone]
    frame = frame.copy()
    frame["per_gpu_hour"] = frame["on_demand_per_hour"].astype(float) / frame["gpu_count"].astype(float)
    return frame.sort_values(["per_gpu_hour", "provider", "instance_type"]).reset_index(drop=True)


def price_of(provider: str, instance_type: str, region: str | None = None) -> float | None:
    """On-demand $/h of one shape (None if the catalog has no price for it)."""
    frame = prices(provider=provider, region=region)
    hit = frame[frame["instance_type"] == instance_type]
    return None if hit.empty else float(hit["on_demand_per_hour"].iloc[0])


# -- refresh ------------------------------------------------------------------------------


@dataclass
class RefreshReport:
    """What a refresh did: per source, rows fetched or the error, and whether old data was kept."""

    ok: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: per source, one line on what a refresh that worked still lacks (a fetcher's rows may carry ``note``)
    notes: dict[str, str] = field(default_factory=dict)
    cache: str = ""

    def text(self) -> str:
        """One line per source."""
        lines = [f"{src}: {n} offers refreshed" + (f"; {self.notes[src]}" if self.notes.get(src) else "")
                 for src, n in sorted(self.ok.items())]
        lines += [f"{src}: FAILED ({why}); keeping the last good data" for src, why in sorted(self.failed.items())]
        lines.append(f"cache: {self.cache}")
        return "\n".join(lines)


def _fetch_azure(client: Any, today: str) -> list[dict[str, Any]]:
    base = str(config.get("catalog.azure-url")).rstrip("/")
    regions = list(config.get("catalog.azure-regions") or ["eastus"])
    snap = snapshot()
    shapes = {
        r.instance_type: (r.gpu_model, r.gpu_count, r.gpu_memory_gb, r.vcpus, r.ram_gb)
        for r in snap[snap["provider"] == "azure"].itertuples()
    }
    shapes.update(_AZURE_EXTRA_SHAPES)
    skus = " or ".join(f"armSkuName eq '{s}'" for s in sorted(shapes))
    region_f = " or ".join(f"armRegionName eq '{r}'" for r in regions)
    params: dict[str, str] | None = {
        "$filter": f"serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and ({region_f}) and ({skus})"
    }
    url: str | None = base
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(20):  # the API pages by 100 items; a bounded walk
        if url is None:
            break
        resp = client.get(url, params=params)
        if resp.status_code != 200:
            raise ProviderError(f"Azure retail prices API answered HTTP {resp.status_code}")
        body = resp.json()
        for item in body.get("Items", []):
            if "Windows" in item.get("productName", "") or "Low Priority" in item.get("skuName", ""):
                continue
            sku, region = item.get("armSkuName"), item.get("armRegionName")
            if sku not in shapes or item.get("unitOfMeasure") != "1 Hour":
                continue
            model, count, mem, vcpus, ram = shapes[sku]
            row = found.setdefault((sku, region), {
                "provider": "azure", "instance_type": sku, "gpu_model": model, "gpu_count": count,
                "gpu_memory_gb": mem, "vcpus": vcpus, "ram_gb": ram, "on_demand_per_hour": None,
                "spot_per_hour": None, "region": region, "source": base, "as_of": today,
            })
            price = float(item["retailPrice"])
            if "Spot" in item.get("skuName", ""):
                row["spot_per_hour"] = price
            else:
                row["on_demand_per_hour"] = price
        url, params = body.get("NextPageLink"), None
    return [r for r in found.values() if r["on_demand_per_hour"]]


def refresh(*, sources: tuple[str, ...] | None = None) -> RefreshReport:
    """Fetch live prices (``sources``, default :func:`live_sources`), cache them with a timestamp, and
    report per source what happened.

    A source that fails (no key, HTTP error, network down) keeps its previously
    cached rows; the report says so. Never raises for a source failure.
    """
    import httpx

    if sources is None:
        sources = live_sources()

    report = RefreshReport(cache=str(_cache_path()))
    cache = _read_cache()
    rows_by_source: dict[str, list[dict[str, Any]]] = {}
    for row in cache.get("rows", []):
        rows_by_source.setdefault(row["provider"], []).append(row)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    timeout = float(config.get("catalog.timeout", 10))
    fetchers: dict[str, Any] = {c.name: (lambda _client, day, c=c: c.fetch_prices(day))
                                for c in provider_classes() if c.live_prices}
    fetchers["azure"] = _fetch_azure
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for src in sources:
            try:
                rows = fetchers[src](client, today)
            except (httpx.HTTPError, CumuloError, ValueError, KeyError, TypeError) as exc:
                report.failed[src] = f"{type(exc).__name__}: {exc}"
                cache.setdefault("sources", {}).setdefault(src, {})["last_error"] = report.failed[src]
                continue
            rows_by_source[src] = list(rows)
            report.ok[src] = len(rows)
            if getattr(rows, "note", ""):
                report.notes[src] = str(rows.note)
            cache.setdefault("sources", {})[src] = {"fetched": time.time(), "rows": len(rows)}
    cache["rows"] = [r for rows in rows_by_source.values() for r in rows]
    cache["written"] = time.time()
    _write_cache(cache)
    return report


def _write_cache(cache: dict[str, Any]) -> None:
    """Replace the cache file atomically; it is the user's alone (mode 600), like every file cumulo writes."""
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(cache, indent=1, sort_keys=True))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def freshness() -> list[str]:
    """One line per live source: when its cached prices were fetched, and the last failure if any."""
    sources = _read_cache().get("sources") or {}
    lines = []
    live = live_sources()
    for src in live:
        info = sources.get(src) or {}
        when = info.get("fetched")
        line = f"{src}: " + (
            f"live prices fetched {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when))}" if when
            else "bundled snapshot (never refreshed)"
        )
        if info.get("last_error"):
            line += f"; last refresh failed: {info['last_error']}"
        lines.append(line)
    bundled = sorted(set(snapshot()["provider"]) - set(live))
    lines.append(f"{', '.join(bundled)}: bundled snapshot (no live source)")
    return lines


# -- terminal -------------------------------------------------------------------------------


def format_table(frame: pd.DataFrame) -> str:
    """A plain-text table of offers, as `cumulo prices` prints it."""
    if frame.empty:
        return "no offers match"
    show = pd.DataFrame({
        "provider": frame["provider"],
        "instance": frame["instance_type"],
        "gpu": frame["gpu_count"].astype(int).astype(str) + "x " + frame["gpu_model"],
        "$/GPU-h": frame["per_gpu_hour"].map(lambda v: f"{v:.3f}"),
        "$/h": frame["on_demand_per_hour"].map(lambda v: f"{v:.3f}"),
        "spot $/h": frame["spot_per_hour"].map(lambda v: "-" if pd.isna(v) else f"{float(v):.3f}"),
        "region": frame["region"],
        "as of": frame["as_of"],
    })
    return show.to_string(index=False)


def no_match(*, gpu: str | None = None, provider: str | None = None, region: str | None = None) -> str:
    """Why no offer matches: what was asked, and the GPUs (and providers, regions) the catalog knows."""
    everything = prices(labelled=False)
    asked = ", ".join(f"{k}={v!r}" for k, v in (("gpu", gpu), ("provider", provider), ("region", region)) if v)
    models = sorted(set(everything["gpu_model"]))
    text = f"no offers match {asked or 'anything'}"
    if gpu and prices(gpu=gpu, labelled=False).empty:
        text += did_you_mean(gpu, models)
    text += f". GPUs in the catalog: {', '.join(models)} (a prefix matches: --gpu A100 means every A100)"
    providers = sorted(set(everything["provider"]))
    if provider and provider.lower() not in providers:
        text += f"; providers: {', '.join(providers)}"
    if region:
        known = provider is not None and provider.lower() in providers
        scope = everything[everything["provider"] == provider.lower()] if known and provider else everything
        text += f"; regions{' of ' + provider if known else ''}: {', '.join(sorted(set(scope['region'])))}"
    return text


def report_text(*, gpu: str | None = None, provider: str | None = None, region: str | None = None) -> str:
    """The offers as the table `cumulo prices` prints: each price with its source and date, then freshness.

    SpecError (:func:`no_match`: what the catalog knows) when no offer matches.
    """
    frame = prices(gpu=gpu, provider=provider, region=region, labelled=False, zones=True)
    if frame.empty:
        raise SpecError(no_match(gpu=gpu, provider=provider, region=region))
    table = format_table(frame)
    if not frame.empty:  # each price with where it comes from, as a column beside its date
        rows = table.splitlines()
        width = max(len(r) for r in rows)
        sources = ["source", *(str(v) if isinstance(v, str) and v else "-" for v in frame["source"])]
        table = "\n".join(f"{r.ljust(width)}  {s}" for r, s in zip(rows, sources))
    lines = [table, *freshness(),
             "Prices are public on-demand list prices per instance-hour (USD); check `source` before relying on one."]
    return "\n".join(lines)
