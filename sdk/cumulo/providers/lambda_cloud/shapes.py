"""Lambda's instance types, and choosing one for a request: cheapest match with capacity now.

Pure data and logic (no requests), so that the choice is tested on its own
and the offer is explained before anything bills.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...exceptions import CapacityError, SpecError

__all__ = ["Image", "InstanceType", "Offer", "choose_image", "choose_instance_type", "parse_images",
           "parse_instance_types"]


@dataclass(frozen=True)
class InstanceType:
    """One Lambda instance type with its price and the regions that have capacity right now."""

    name: str
    description: str
    price_per_hour: float
    vcpus: int
    memory_gib: int
    gpus: int
    regions: tuple[str, ...]

    @property
    def tokens(self) -> set[str]:
        """Lower-case parts of the name ("gpu_8x_a100_80gb_sxm4" -> {"gpu", "8x", "a100", "80gb", "sxm4"})."""
        return set(self.name.lower().split("_"))

    def summary(self) -> str:
        """One line for the offer shown before launch."""
        return (f"{self.name} ({self.description or f'{self.gpus} GPU'}, {self.vcpus} vCPU, "
                f"{self.memory_gib} GiB) at ${self.price_per_hour:.2f}/h")


def parse_instance_types(data: dict[str, Any]) -> dict[str, InstanceType]:
    """The ``data`` of ``GET /instance-types`` as InstanceType values by name."""
    out = {}
    for name, entry in data.items():
        it = entry.get("instance_type", {})
        specs = it.get("specs", {})
        out[name] = InstanceType(
            name=it.get("name", name),
            description=it.get("description", ""),
            price_per_hour=float(it.get("price_cents_per_hour", 0)) / 100.0,
            vcpus=int(specs.get("vcpus", 0)),
            memory_gib=int(specs.get("memory_gib", 0)),
            gpus=int(specs.get("gpus", 0)),
            regions=tuple(r["name"] for r in entry.get("regions_with_capacity_available", [])),
        )
    return out


def _gpu_tokens(gpu: str) -> set[str]:
    return {t for t in re.split(r"[\s_\-]+", gpu.strip().lower()) if t}


def choose_instance_type(
    types: dict[str, InstanceType],
    *,
    gpu: str | None,
    instance_type: str | None,
    gpus_per_instance: int | None,
    region: str | None,
) -> tuple[InstanceType, str]:
    """Pick the cheapest matching instance type with capacity, and its region.

    Raises SpecError when nothing matches the request at all, and CapacityError
    naming the regions and shapes that do have capacity when the match has none.
    """
    if instance_type:
        if instance_type not in types:
            raise SpecError(f"Lambda has no instance type {instance_type!r}; known: {', '.join(sorted(types))}")
        candidates = [types[instance_type]]
    elif gpu:
        want = _gpu_tokens(gpu) | {f"{gpus_per_instance or 1}x"}
        candidates = [t for t in types.values() if want <= t.tokens]
        if not candidates:
            models = sorted({tok for t in types.values() for tok in t.tokens} - {"gpu"} - {f"{n}x" for n in range(1, 17)})
            raise SpecError(
                f"no Lambda instance type has {gpus_per_instance or 1}x {gpu}; GPU models offered: "
                f"{', '.join(models)} (or pass instance_type=, one of {', '.join(sorted(types))})"
            )
    else:
        raise SpecError("say which GPU you want: connect('lambda', gpu='A100') or instance_type='gpu_1x_a100'")
    usable = [(t.price_per_hour, t.name, t) for t in candidates if (region in t.regions if region else t.regions)]
    if usable:
        best = min(usable)[2]
        return best, region or best.regions[0]
    # Nothing matched has capacity where asked: say where there is some.
    where = region or "any region"
    lines = []
    for t in sorted(candidates, key=lambda t: t.price_per_hour):
        if t.regions:
            lines.append(f"{t.name} has capacity in {', '.join(t.regions)}")
    others = sorted((t for t in types.values() if t.regions and t not in candidates), key=lambda t: t.price_per_hour)
    if others:
        lines.append("shapes with capacity now: " + ", ".join(
            f"{t.name} (${t.price_per_hour:.2f}/h; {', '.join(t.regions)})" for t in others[:6]))
    names = ", ".join(t.name for t in candidates)
    raise CapacityError(
        f"no capacity for {names} in {where} right now. "
        + ("; ".join(lines) + ". " if lines else "No shape has capacity anywhere right now. ")
        + "Pass region= or instance_type= accordingly, or try again later."
    )


@dataclass(frozen=True)
class Image:
    """A machine image instances can boot (``GET /images``): in one region, named by id or by family."""

    id: str
    family: str
    name: str
    version: str
    region: str

    def summary(self) -> str:
        """How the estimate names it."""
        return f"{self.name or self.family} {self.version}".strip() + f" ({self.family}, id {self.id})"


@dataclass(frozen=True)
class Offer:
    """What a Lambda launch boots: the instance type and, when one was asked for, the image (None: Lambda's
    default, Lambda Stack)."""

    instance_type: InstanceType
    image: Image | None = None


def parse_images(data: list[dict[str, Any]]) -> list[Image]:
    """The ``data`` of ``GET /images``."""
    out = []
    for entry in data:
        region = entry.get("region") or {}
        out.append(Image(id=str(entry.get("id") or ""), family=str(entry.get("family") or ""),
                         name=str(entry.get("name") or ""), version=str(entry.get("version") or ""),
                         region=str(region.get("name") if isinstance(region, dict) else region or "")))
    return out


def choose_image(images: list[Image], wanted: str, region: str, *, chosen: bool = False) -> Image:
    """The image ``wanted`` (an id, or a family: its latest version) in ``region`` (``chosen``: by price, not
    named by the user); SpecError saying what exists."""
    matches = [i for i in images if wanted in (i.id, i.family)]
    if not matches:
        families = sorted({i.family for i in images if i.family})
        raise SpecError(f"Lambda has no image {wanted!r} (by id or family); families offered: "
                        f"{', '.join(families) or 'none'}")
    here = [i for i in matches if i.region == region]
    if not here:
        raise SpecError(f"image {wanted!r} is not offered in {region}"
                        + (", the region with the cheapest capacity" if chosen else "") + "; it is in "
                        f"{', '.join(sorted({i.region for i in matches}))}: pass region= one of those")
    return max(here, key=lambda i: tuple(int(p) if p.isdigit() else 0 for p in i.version.split(".")))
