"""The lines people read about a notebook's cluster: the last run it records and what it would cost now."""

from __future__ import annotations

from typing import Any

from ..cost.metering import rates

__all__ = ["estimate_line", "last_run_line"]


def _money(amount: float) -> str:
    """Dollars to the cent, or to a hundredth of a cent below one cent (a short run on a cheap shape)."""
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _hardware(entry: dict[str, Any]) -> str:
    gpus = int(entry.get("gpus") or 0)
    workers = entry.get("workers") or (entry.get("spec") or {}).get("workers")
    gpu = entry.get("gpu") or entry.get("gpu_model")
    if not gpus and gpu:
        gpus = int(workers or 1) * int(entry.get("gpus_per_worker") or 1)
    if gpus and gpu:
        return f"{gpus}×{gpu}"
    where = "" if entry.get("provider") in (None, "local") else f"{entry.get('provider')} "
    return f"{workers or '?'} {where}CPU worker{'s' if workers != 1 else ''}"


def last_run_line(meta: dict[str, Any] | None, entry: dict[str, Any] | None = None) -> str | None:
    """'last run: 12 min on 4×A10 ≈ $0.41 (2026-11-20)', or None when the notebook records no run."""
    run = (meta or {}).get("last_run")
    if not run:
        return None
    entry = entry or next(iter((meta or {}).get("clusters") or ()), None) or {}
    cost = run.get("cost")
    money = f" ≈ {_money(cost)}" if cost is not None else ", no rate set"
    status = "" if run.get("status", "ok") == "ok" else f", {run['status']}"
    when = f"{run.get('date', '?')}{status}"
    return f"last run: {_duration(run.get('wall_seconds'))} on {_hardware(entry)}{money} ({when})"


def _estimate(entry: dict[str, Any]) -> tuple[float | None, str]:
    """($/h now, what it rests on) for a cluster spec: the catalog for priced providers, else configured rates."""
    spec = dict(entry.get("spec") or {})
    provider = spec.get("provider") or entry.get("provider") or "local"
    workers = max(int(spec.get("workers") or entry.get("workers") or 1), 1)
    try:
        from ..cost import catalog  # heavy (pandas, the price tables): only for a notebook that asks a price

        frame = catalog.prices(provider=provider)
    except Exception:
        frame = None
    if frame is not None and not frame.empty:
        if spec.get("instance_type"):
            frame = frame[frame["instance_type"] == spec["instance_type"]]
        else:
            gpu = str(spec.get("gpu") or entry.get("gpu") or "")
            per = int(spec.get("gpus_per_worker") or 1)
            frame = frame[frame["gpu_model"].str.lower().str.startswith(gpu.lower()) & (frame["gpu_count"] == per)]
        if spec.get("region"):
            frame = frame[(frame["region"] == spec["region"]) | (frame["region"] == "all")]
        if frame.empty:
            return None, f"no {provider} price in the catalog for this shape (see `cumulo prices`)"
        row = frame.sort_values("on_demand_per_hour").iloc[0]
        price = float(row["on_demand_per_hour"])
        return price * workers, (f"{workers} x {row['instance_type']} at ${price:,.2f}/h, {provider} list price "
                                 f"({row['source']}, as of {row['as_of']})")
    per_worker, per_gpu = rates()
    if per_worker is None and per_gpu is None:
        return None, "no rate set (cumulo.cost.rate-per-worker-hour / rate-per-gpu-hour)"
    gpus = int(entry.get("gpus") or 0)
    rate = (per_worker or 0.0) * workers + (per_gpu or 0.0) * gpus
    return rate, f"{workers} worker(s) x configured rate"


def estimate_line(meta: dict[str, Any] | None, entry: dict[str, Any] | None = None) -> str:
    """'current estimate: $3.00/h (...); about $0.60 for a run as long as the last one'."""
    entry = entry or next(iter((meta or {}).get("clusters") or ()), None) or {}
    rate, basis = _estimate(entry)
    if rate is None:
        return f"current estimate: {basis}"
    line = f"current estimate: {_money(rate)}/h ({basis})"
    wall = ((meta or {}).get("last_run") or {}).get("wall_seconds")
    if wall:
        line += f"; about {_money(rate * wall / 3600.0)} for a run as long as the last one"
    return line
