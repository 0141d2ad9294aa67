"""Resolving a lock for Linux x86-64 before anything bills, and reading what a resolver refused: the package
the index lacks, or an index that could not be reached at all (which is not the package's fault)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from urllib.parse import urlsplit

from ..exceptions import EnvironmentSyncError
from .lock import Lock
from .wheels import uv_path

__all__ = ["check_resolvable", "named_package", "unreachable_index", "without_credentials"]

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
        index = unreachable_index(text)
        if index is not None:
            raise EnvironmentSyncError(
                f"the package index {index} could not be reached, so the environment could not be checked for "
                f"Linux x86-64 workers (nothing was launched):\n  " + "\n  ".join(_tail(text)) + "\nCheck the "
                "network and the index setting (UV_INDEX_URL or uv.toml), or add a wheel folder with "
                "cumulo.env.find-links (no package was refused: the index did not answer)")
        raise EnvironmentSyncError(
            (f"package {named!r} " if named else "the environment ") + _not_found(text, named)
            + f"cannot be installed on Linux x86-64 workers with Python {lock.python} (nothing was launched):\n  "
            + "\n  ".join(_tail(text)) + "\nDrop it (cumulo.env.exclude), pin a version that exists, or pass environment=[...] "
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


#: uv's words when it could not talk to an index at all (connection refused, no such host, timed out, TLS, 5xx),
#: after "Failed to fetch: URL": the URL names the package, but the package is not what failed.
_FETCH_FAILED = re.compile(r"Failed to fetch: (\S+)")
_NO_ANSWER = re.compile(r"error sending request|tcp connect error|dns error|Connection refused|timed out|"
                        r"Could not connect|failed to lookup address|certificate|server error \(5\d\d", re.IGNORECASE)
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def unreachable_index(text: str) -> str | None:
    """The index (scheme://host[:port], credentials removed) a resolver error says it could not reach, or None
    when the error is about the packages themselves (not found, no matching version, no wheel)."""
    fetched = _FETCH_FAILED.search(text)
    if fetched is None or not _NO_ANSWER.search(text):
        return None
    url = urlsplit(fetched.group(1))
    host = url.hostname or "?"
    return f"{url.scheme}://{host}" + (f":{url.port}" if url.port else "")


def without_credentials(text: str) -> str:
    """``text`` with the user:password part of every URL in it removed (an index URL may carry a token)."""
    return _USERINFO.sub("", text)


def _not_found(text: str, named: str | None) -> str:
    """'is not on the package index, so it ' when the resolver reached the index and it has no such package."""
    if named and re.search(rf"{re.escape(named)} was not found in the package registry", text):
        return "is not on the package index, so it "
    return ""


def _tail(text: str) -> list[str]:
    """The last lines of a resolver's error, as quoted in cumulo's (credentials removed)."""
    return without_credentials(text).splitlines()[-6:]
