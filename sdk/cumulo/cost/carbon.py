"""CO2 from measured GPU energy: kWh x the grid carbon intensity of the cluster's region.

The intensities are data bundled with cumulo (``cumulo/data/carbon_intensity.csv``), one
row per cloud region with its source and date, and a default row for clusters whose
region is unknown (this machine, ssh hosts, a gateway). ``cumulo.cost.carbon-intensity``
overrides the table: a number (g CO2/kWh for every cluster) or a mapping from region
(``"us-east-1"``) or ``"provider/region"`` to a number. Where CodeCarbon is installed,
its own cloud table answers for regions ours lacks.

CO2 is computed only from energy the workers measured (NVML): :func:`co2_grams` of
``None`` is ``None``, never an estimate.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..exceptions import ConfigError

__all__ = ["Intensity", "co2_grams", "intensity", "table"]

_TABLE = Path(__file__).resolve().parent.parent / "data" / "carbon_intensity.csv"
_KEY = "cost.carbon-intensity"


@dataclass(frozen=True)
class Intensity:
    """A grid carbon intensity and what it rests on."""

    g_per_kwh: float
    source: str
    date: str
    #: the (provider, region) row that answered; ("*", "*") for the default
    row: tuple[str, str]


@functools.lru_cache(maxsize=1)
def table() -> dict[tuple[str, str], Intensity]:
    """The bundled table, by (provider, region)."""
    with _TABLE.open(encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    out = {}
    for r in csv.DictReader(lines):
        key = (r["provider"].strip(), r["region"].strip())
        out[key] = Intensity(float(r["g_per_kwh"]), r["source"].strip(), r["date"].strip(), key)
    return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"cumulo.{where} is {value!r}; it must be grams of CO2 per kWh (a number, 0 or more), e.g. 350")
    return float(value)


def _override(provider: str, region: str | None) -> Intensity | None:
    value = config.get(_KEY)
    if value is None:
        return None
    if not isinstance(value, dict):
        return Intensity(_number(value, _KEY), "cumulo.cost.carbon-intensity (your setting)", "", ("*", "*"))
    for key in (f"{provider}/{region}", str(region), "*"):
        if key in value:
            return Intensity(_number(value[key], f"{_KEY}.{key}"),
                             f"cumulo.cost.carbon-intensity[{key!r}] (your setting)", "", (provider, str(region)))
    return None


@functools.lru_cache(maxsize=64)
def _codecarbon(region: str) -> Intensity | None:
    """CodeCarbon's cloud table, where it is installed (an optional source for regions ours lacks)."""
    try:
        from importlib.resources import files

        path = files("codecarbon") / "data" / "cloud" / "impact.csv"
        text = path.read_text(encoding="utf-8")
    except Exception:  # not installed, or laid out otherwise: our table and the default answer
        return None
    for r in csv.DictReader(text.splitlines()):
        if r.get("region") == region and r.get("impact"):
            try:
                return Intensity(float(r["impact"]), f"CodeCarbon impact.csv: {r.get('source') or 'no source named'}",
                                 "", (str(r.get("provider")), region))
            except ValueError:
                return None
    return None


def intensity(provider: str | None, region: str | None) -> Intensity:
    """The grid intensity for a cluster of ``provider`` in ``region``: your setting, else the table's row
    for that provider and region, else another provider's row for the same region name, else CodeCarbon's,
    else the default row."""
    provider = provider or "*"
    found = _override(provider, region)
    if found is not None:
        return found
    rows = table()
    if region:
        if (provider, region) in rows:
            return rows[(provider, region)]
        same = [v for (p, r), v in rows.items() if r == region]
        if same:
            return same[0]
        cc = _codecarbon(region)
        if cc is not None:
            return cc
    return rows[("*", "*")]


def co2_grams(energy_wh: float | None, grid: Intensity) -> float | None:
    """Grams of CO2 for ``energy_wh`` of measured energy; None where nothing was measured."""
    if energy_wh is None:
        return None
    return float(energy_wh) / 1000.0 * grid.g_per_kwh
