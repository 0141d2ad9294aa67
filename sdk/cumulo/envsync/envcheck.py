"""The environment check run on connect: do client, scheduler and workers agree?

Dask pickles functions and data between processes, so a client on one dask
version talking to workers on another fails in confusing ways. cumulo probes
every side once on connect (see _probe.py), derives the cluster's GPU shape
and dataframe backend from it, and reports mismatches as a small table saying
which side runs which version. ``cumulo.connect.version-check`` chooses raise
(the default: a gate before any user work), warn or ignore.

Python is compared by major.minor: 3.11.7 against 3.11.2 round-trips, so a patch-level
difference is informational (a log line at INFO, :func:`patch_differences`), never a gate. distributed
makes its own check on every client connection and warns about any difference, patch level
included, as a table; before connecting, cumulo adds a warnings filter for exactly the table whose
only row is python at this interpreter's major.minor (:func:`quiet_patch_level_warnings`), so
such a pair is quiet while every other table (and cumulo's own gate) still shows.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from distributed import Client
from distributed.versions import VersionMismatchWarning as DistributedVersionWarning

from .. import config
from ..exceptions import VersionMismatch
from . import _probe

__all__ = ["ClusterFacts", "VersionMismatchWarning", "gather", "mismatch_table", "mismatches",
           "patch_differences", "patch_only_pattern", "quiet_patch_level_warnings"]

logger = logging.getLogger(__name__)
cloudpickle.register_pickle_by_value(_probe)

#: Packages that must be the same on every side (python compared as major.minor): those that decide
#: whether pickled functions and data round-trip. ``cumulo.connect.version-packages`` adds more.
MUST_MATCH = ("python", "dask", "distributed", "cloudpickle", "msgpack", "numpy", "pandas", "pyarrow", "cudf",
              "cumulo")


def _extra() -> tuple[str, ...]:
    return tuple(str(p) for p in config.get("connect.version-packages", None) or ())


def patch_only_pattern(major: int = sys.version_info.major, minor: int = sys.version_info.minor) -> str:
    """The regular expression of distributed's version warning when python differs only at patch level.

    distributed.versions.error_message writes 'Mismatched versions found' and an ascii table
    (Package, the connecting side, Scheduler, Workers); python versions are written as
    '3.11.7.final.0', several workers' as a set, no workers as None. This matches only a table
    whose single row is python with every version at ``major.minor``.
    """
    version = rf"{major}\.{minor}\.\d+\.\w+\.\d+"
    cell = rf"(?:{version}|None|\{{'{version}'(?:, '{version}')*\}})"
    bar = r"\+[-+]+\+"
    return (rf"Mismatched versions found\n\n{bar}\n\| Package +\|[^\n]*\n{bar}\n"
            rf"\| python +\| {cell} +\| {cell} +\| {cell} +\|\n{bar}\Z")


def quiet_patch_level_warnings() -> None:
    """Ignore distributed's version warning when its only row is a python patch-level difference.

    Called before each connection (a filter added once could be dropped by a caller's
    ``warnings.catch_warnings()`` block); adding it again only moves it to the front.
    """
    warnings.filterwarnings("ignore", message=patch_only_pattern(), category=DistributedVersionWarning)


class VersionMismatchWarning(UserWarning):
    """Client, scheduler and workers run different versions (cumulo.connect.version-check=warn)."""


@dataclass
class ClusterFacts:
    """What the probe learned: per-side versions and the workers' GPUs."""

    client: dict[str, Any]
    scheduler: dict[str, Any]
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        """GPUs across all workers."""
        return sum(len(w["gpus"]) for w in self.workers.values())

    @property
    def gpu_model(self) -> str | None:
        """The GPU model(s) of the workers, e.g. 'NVIDIA H100 80GB HBM3' (None without GPUs)."""
        names = sorted({g["name"] for w in self.workers.values() for g in w["gpus"]})
        return ", ".join(names) or None

    @property
    def backend(self) -> str:
        """'cudf' when every worker has a GPU and cudf, else 'pandas'."""
        if self.workers and all(w["gpus"] and w["versions"].get("cudf") for w in self.workers.values()):
            return "cudf"
        return "pandas"


async def gather(client: Client) -> ClusterFacts:
    """Probe the client process, the scheduler and every worker, all at once.

    The scheduler's and the workers' round trips are in flight together, and this
    process probes itself on a thread meanwhile (package metadata is read from disk):
    the probe costs one round trip on connect, not three steps in a row.
    """
    extra = _extra()
    scheduler, workers, here = await asyncio.gather(
        client.run_on_scheduler(_probe.probe, extra),
        client.run(_probe.probe, extra),
        asyncio.to_thread(_probe.probe, extra),
    )
    return ClusterFacts(client=here, scheduler=scheduler, workers=workers)


def _comparable(package: str, version: str | None) -> str | None:
    if package == "python" and version:
        return ".".join(version.split(".")[:2])
    return version


def mismatches(facts: ClusterFacts) -> dict[str, dict[str, set[str]]]:
    """Packages whose versions differ, as {package: {version: {sides}}}.

    A package absent on a side (e.g. cumulo on a cluster started elsewhere) is
    not a mismatch; cudf is compared only where it is installed.
    """
    sides = {"client": facts.client, "scheduler": facts.scheduler}
    sides.update({f"worker {addr}": info for addr, info in facts.workers.items()})
    out: dict[str, dict[str, set[str]]] = {}
    for package in (*MUST_MATCH, *_extra()):
        seen: dict[str, set[str]] = {}
        for side, info in sides.items():
            version = _comparable(package, info["versions"].get(package))
            if version is not None:
                seen.setdefault(version, set()).add(side)
        if len(seen) > 1:
            out[package] = seen
    return out


def patch_differences(facts: ClusterFacts) -> dict[str, dict[str, set[str]]]:
    """Packages compared loosely (python, by major.minor) whose full versions differ: informational only."""
    sides = {"client": facts.client, "scheduler": facts.scheduler}
    sides.update({f"worker {addr}": info for addr, info in facts.workers.items()})
    seen: dict[str, set[str]] = {}
    for side, info in sides.items():
        version = info["versions"].get("python")
        if version is not None:
            seen.setdefault(str(version), set()).add(side)
    if len(seen) > 1 and len({_comparable("python", v) for v in seen}) == 1:
        return {"python": seen}
    return {}


def mismatch_table(found: dict[str, dict[str, set[str]]]) -> str:
    """A plain-text table: package, version, which sides run it (workers counted)."""
    lines = [f"{'package':<12} {'version':<16} where"]
    for package, versions in found.items():
        for version, sides in sorted(versions.items()):
            named = sorted(s for s in sides if not s.startswith("worker "))
            n_workers = sum(s.startswith("worker ") for s in sides)
            if n_workers:
                named.append(f"{n_workers} worker{'s' if n_workers > 1 else ''}")
            lines.append(f"{package:<12} {version:<16} {', '.join(named)}")
    return "\n".join(lines)


def check(facts: ClusterFacts, *, policy: str | None = None) -> None:
    """Warn or raise per ``cumulo.connect.version-check`` when versions differ."""
    policy = policy or config.get("connect.version-check", "raise")
    patch = patch_differences(facts)
    if patch:
        logger.info("cumulo: python differs only at patch level, which round-trips (not a mismatch):\n%s",
                    mismatch_table(patch))
    found = mismatches(facts)
    if not found or policy == "ignore":
        return
    message = (
        "client, scheduler and workers run different versions:\n"
        + mismatch_table(found)
        + "\nResults may not round-trip. Install the same versions everywhere: let cumulo build the workers' "
        "environment (environment='sync', the default for clusters it launches), or pin these packages "
        "where the scheduler was started; cumulo.connect.version-check='warn' goes on regardless."
    )
    if policy == "raise":
        raise VersionMismatch(message)
    warnings.warn(message, VersionMismatchWarning, stacklevel=3)
