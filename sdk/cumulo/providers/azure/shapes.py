"""Azure GPU VM sizes, and choosing one for a request: the catalog's Azure rows, by GPU model and count.

Pure data and logic (no requests): the GPU name maps to VM size series
(T4 NCasT4_v3, A10 NVadsA10_v5, A100 NC A100 v4 / ND A100 v4, H100 NC H100 v5 /
ND H100 v5); within them the cheapest size with the asked number of GPUs (or
the fewest GPUs, when none was asked) wins. Prices are the catalog's (the
bundled snapshot's Azure rows, or a ``cumulo prices --refresh`` of Azure's
retail prices API).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ...exceptions import SpecError

__all__ = ["SERIES", "Shape", "choose_shape", "shapes"]

#: GPU model (as users write it) -> patterns of the VM sizes that carry it.
SERIES: dict[str, tuple[str, ...]] = {
    "T4": (r"^Standard_NC\d+as_T4_v3$",),
    "A10": (r"^Standard_NV\d+ads_A10_v5$",),
    "A100": (r"^Standard_NC\d+ads_A100_v4$", r"^Standard_ND\d+a\w*_v4$"),
    "H100": (r"^Standard_NC\d+ads_H100_v5$", r"^Standard_ND\d+isr_H100_v5$"),
    "H200": (r"^Standard_ND\d+isr_H200_v5$",),
}


@dataclass(frozen=True)
class Shape:
    """One VM size with what the catalog says of it."""

    vm_size: str
    gpu_model: str
    gpus: int
    vcpus: int
    memory_gib: int
    #: On-demand $/h, for the catalog row's region.
    on_demand: float
    price_region: str
    price_source: str

    def summary(self) -> str:
        """A few words for the offer line."""
        return f"{self.vm_size} ({self.gpus}x {self.gpu_model}, {self.vcpus} vCPU, {self.memory_gib} GiB)"


def shapes(frame: pd.DataFrame, region: str | None = None) -> dict[str, Shape]:
    """The catalog's Azure rows (catalog.prices(provider="azure")) with a price, as shapes by VM size: the
    ``region``'s row where the catalog has one, else another region's (the bundled eastus price)."""
    out: dict[str, Shape] = {}
    if region is not None:
        frame = pd.concat([frame[frame["region"] == region], frame[frame["region"] != region]])
    for row in frame.itertuples(index=False):
        if pd.isna(row.on_demand_per_hour):
            continue
        out.setdefault(str(row.instance_type), Shape(
            vm_size=str(row.instance_type), gpu_model=str(row.gpu_model), gpus=int(row.gpu_count),
            vcpus=int(row.vcpus), memory_gib=int(row.ram_gb), on_demand=float(row.on_demand_per_hour),
            price_region=str(row.region), price_source=str(row.source)))
    return out


def _series(gpu: str) -> tuple[str, ...] | None:
    key = re.sub(r"[\s_\-]", "", gpu).upper()
    for model in sorted(SERIES, key=len, reverse=True):  # the longest name first: A100 before A10
        if key.startswith(model):  # "A100-80GB" is an A100
            return SERIES[model]
    return None


def choose_shape(known: dict[str, Shape], *, gpu: str | None, vm_size: str | None,
                 gpus_per_instance: int | None) -> Shape:
    """The VM size for a request; SpecError naming what to pass when nothing matches."""
    if vm_size:
        if vm_size not in known:
            raise SpecError(f"cumulo has no price for the Azure VM size {vm_size!r}, so it cannot estimate or limit "
                            f"what it costs; GPU sizes it knows: {', '.join(sorted(known))}")
        return known[vm_size]
    if not gpu:
        raise SpecError("say which GPU you want: connect('azure', gpu='A100') or "
                        "instance_type='Standard_NC24ads_A100_v4'")
    series = _series(gpu)
    if series is None:
        raise SpecError(f"Azure has no GPU called {gpu!r} in cumulo's table; pass gpu= one of {', '.join(SERIES)} "
                        "(or instance_type= a VM size, e.g. 'Standard_NC24ads_A100_v4')")
    want = re.search(r"(40|80)", gpu)
    candidates = [s for s in known.values() if any(re.match(p, s.vm_size) for p in series)
                  and (want is None or want.group(1) in s.gpu_model)]
    if not candidates:
        raise SpecError(f"cumulo has no price for Azure's {gpu} VM sizes, so it cannot estimate or limit what they "
                        f"cost: pass instance_type= one it knows ({', '.join(sorted(known))})")
    if gpus_per_instance:
        exact = [s for s in candidates if s.gpus == gpus_per_instance]
        if not exact:
            counts = sorted({s.gpus for s in candidates})
            raise SpecError(f"Azure {gpu} VMs come with {', '.join(map(str, counts))} GPUs, not {gpus_per_instance}: "
                            "pass gpus_per_worker= one of those")
        candidates = exact
    else:
        fewest = min(s.gpus for s in candidates)
        candidates = [s for s in candidates if s.gpus == fewest]
    return min(candidates, key=lambda s: (s.on_demand, s.vm_size))
