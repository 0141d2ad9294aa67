"""AWS GPU instance types, and choosing one for a request: the catalog's rows for AWS, by GPU model and count.

Pure data and logic (no requests): the GPU name maps to instance families
(T4 g4dn, A10G g5, L4 g6, L40S g6e, A100 p4d/p4de, H100 p5, H200 p5e/p5en,
T4G g5g on Graviton); within them the cheapest type with the asked number
of GPUs (or the fewest GPUs, when none was asked) wins. Prices are the
catalog's (this package's prices.csv, or a ``cumulo prices --refresh``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ...exceptions import SpecError

__all__ = ["FAMILIES", "Shape", "architecture", "choose_shape", "shapes"]

#: GPU model (as users write it) -> the instance families that carry it.
FAMILIES: dict[str, tuple[str, ...]] = {
    "T4": ("g4dn",), "T4G": ("g5g",), "A10G": ("g5",), "L4": ("g6",), "L40S": ("g6e",),
    "A100": ("p4d", "p4de"), "H100": ("p5",), "H200": ("p5e", "p5en"),
}


@dataclass(frozen=True)
class Shape:
    """One instance type with what the catalog says of it."""

    instance_type: str
    gpu_model: str
    gpus: int
    vcpus: int
    memory_gib: int
    #: On-demand $/h where the catalog has it (None: unknown), for the catalog row's region.
    on_demand: float | None
    price_region: str
    price_source: str

    @property
    def family(self) -> str:
        return self.instance_type.split(".", 1)[0]

    def summary(self) -> str:
        """A few words for the offer line."""
        return f"{self.instance_type} ({self.gpus}x {self.gpu_model}, {self.vcpus} vCPU, {self.memory_gib} GiB)"


def architecture(instance_type: str) -> str:
    """``arm64`` for Graviton families (g5g, ...), else ``x86_64``: which AMI the type boots."""
    return "arm64" if re.match(r"^[a-z]+\d+g", instance_type) else "x86_64"


_ZONE_RE = re.compile(r".*\d[a-z]$")


def shapes(frame: pd.DataFrame, region: str | None = None) -> dict[str, Shape]:
    """The catalog's AWS rows (catalog.prices(provider="aws")) as shapes by instance type.

    A type's price is its ``region`` row where the catalog has one (a ``cumulo prices --refresh``), else
    the first other region's (the bundled us-east-1 list price); a zone's rows (spot prices, which
    catalog.prices leaves out unless asked) never count.
    """
    out = {}
    frame = frame[~frame["region"].astype(str).str.match(_ZONE_RE)]
    if region is not None:
        frame = pd.concat([frame[frame["region"] == region], frame[frame["region"] != region]])
    for row in frame.itertuples(index=False):
        out.setdefault(str(row.instance_type), Shape(
            instance_type=str(row.instance_type), gpu_model=str(row.gpu_model), gpus=int(row.gpu_count),
            vcpus=int(row.vcpus), memory_gib=int(row.ram_gb),
            on_demand=None if pd.isna(row.on_demand_per_hour) else float(row.on_demand_per_hour),
            price_region=str(row.region), price_source=str(row.source)))
    return out


def _families(gpu: str) -> tuple[str, ...] | None:
    key = re.sub(r"[\s_\-]", "", gpu).upper()
    for model, families in FAMILIES.items():
        if key == model or (key.startswith(model) and model != "T4"):  # "A100-80GB" is an A100; T4G is not a T4
            return families
    return None


def choose_shape(known: dict[str, Shape], *, gpu: str | None, instance_type: str | None,
                 gpus_per_instance: int | None) -> Shape:
    """The instance type for a request; SpecError naming what exists when nothing matches."""
    if instance_type:
        if instance_type not in known:
            raise SpecError(
                f"cumulo has no price for the instance type {instance_type!r}, so it cannot estimate or limit "
                f"what it costs; GPU types it knows: {', '.join(sorted(known))}")
        return known[instance_type]
    if not gpu:
        raise SpecError("say which GPU you want: connect('aws', gpu='A10G') or instance_type='g5.xlarge'")
    families = _families(gpu)
    if families is None:
        raise SpecError(f"AWS has no GPU called {gpu!r} in cumulo's table; GPUs: {', '.join(FAMILIES)} "
                        "(or pass instance_type=)")
    want_80 = "80" in gpu
    candidates = [s for s in known.values() if s.family in families and s.on_demand is not None
                  and (not want_80 or "80" in s.gpu_model)]
    if not candidates:
        raise SpecError(
            f"cumulo has no price for the {gpu} instance types ({', '.join(f + '.*' for f in families)}), so it "
            "cannot estimate or limit what they cost: pass instance_type= with one it knows, "
            f"({', '.join(sorted(known))})")
    if gpus_per_instance:
        exact = [s for s in candidates if s.gpus == gpus_per_instance]
        if not exact:
            counts = sorted({s.gpus for s in candidates})
            raise SpecError(f"AWS {gpu} instances come with {', '.join(map(str, counts))} GPUs, not "
                            f"{gpus_per_instance}: pass gpus_per_worker= one of those")
        candidates = exact
    else:
        fewest = min(s.gpus for s in candidates)
        candidates = [s for s in candidates if s.gpus == fewest]
    return min(candidates, key=lambda s: (s.on_demand, s.instance_type))
