"""Resolving a lock for Linux x86-64 before anything bills, and naming the package a resolver refused."""

from __future__ import annotations

import logging
import os
import re
import subprocess

from ..exceptions import EnvironmentSyncError
from .lock import Lock
from .wheels import uv_path

__all__ = ["check_resolvable", "named_package"]

logger = logging.getLogger("cumulo")
#: uv's words when resolving needs a source build that --no-build refuses.
_NEEDS_BUILD = re.compile(r"Building source distributions (?:for .* )?(?:is|are) disabled|building from source "
                          r"is disabled|no usable wheels", re.IGNORECASE)


def check_resolvable(lock: Lock, *, platform_tag: str = "x86_64-manylinux_2_28") -> None:
    """Resolve the pins for Linux x86-64 and the lock's Python without installing anything, so that a
    package the index lacks (or one with no Linux build) fails before any instance bills, by name.

    Wheels only (``--no-build``): resolving never builds a source distribution here, because building
    one runs its author's code (a ``setup.py``, a build backend) on this machine. A requirement that
    only a build could resolve (a source-only package, a ``pkg @ file://`` or VCS requirement) is left
    to the workers, with a log line naming it.

    Needs uv (the `ssh` extra brings it); without uv the check is skipped with a log line."""
    uv = uv_path()
    if uv is None:
        logger.warning("cumulo: uv is not installed; the environment is checked on the workers")
        return
    cmd = [uv, "pip", "compile", "-q", "--no-header", "--no-build", "--python-version", lock.python,
           "--python-platform", platform_tag, "-o", os.devnull, "-"]
    for link in lock.find_links:
        cmd[3:3] = ["--find-links", link]
    done = subprocess.run(cmd, input=lock.requirements_text(), capture_output=True, text=True)
    if done.returncode != 0:
        text = (done.stderr or done.stdout).strip()
        named = named_package(text)
        if _NEEDS_BUILD.search(text):
            logger.warning("cumulo: %s has no wheel for Linux x86-64 and is not built here (its build code would "
                           "run on this machine); the workers build it, so the environment is checked there",
                           repr(named) if named else "a package of the environment")
            return
        raise EnvironmentSyncError(
            (f"package {named!r} " if named else "the environment ") + "cannot be installed on Linux x86-64 "
            f"workers with Python {lock.python} (nothing was launched):\n  " + "\n  ".join(text.splitlines()[-6:])
            + "\nDrop it (cumulo.env.exclude), pin a version that exists, or pass environment=[...] "
            "with what the workers need")


def named_package(text: str) -> str | None:
    """The package a resolver error is about, when it names one."""
    for pattern in (r"there is no version of ([A-Za-z0-9_.\-]+)", r"Failed to build `([A-Za-z0-9_.\-]+)",
                    r"Because ([A-Za-z0-9_.\-]+)(?:==\S+)? has no usable wheels",
                    r"Because ([A-Za-z0-9_.\-]+) was not found",
                    r"([A-Za-z0-9_.\-]+) was not found in the package registry",
                    r"No matching distribution found for ([A-Za-z0-9_.\-]+)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return None
