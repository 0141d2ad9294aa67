"""How cumulo names and marks what it creates at Azure: deterministic names, and tags read back into a Mark.

A cluster lives in one resource group, ``cumulo-<installation>-<cluster id>``;
inside it the names are fixed (``vnet``, ``subnet``, ``nsg``, and per VM
``<vm>-nic``, ``<vm>-ip``, ``<vm>-disk``), so a launch that died part way is
found again by name. In an existing resource group (``resource_group=``), which
several clusters may share, the vnet and NSG are ``<group_of(mark)>-vnet`` and
``-nsg`` instead. The resource group, every VM and the network resources carry the tags
``cumulo-installation``, ``cumulo-cluster``, ``cumulo-role`` and ``cumulo-owner``
(who launched it, for a teammate reading the portal): ownership is decided by
the tags alone (save an OS disk left in an existing group, which Azure gives no
tags: by its name, adapter.py). Azure tag names may not hold ``<>%&\\?/``; these hold none.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable

from ..cloud.adapter import Mark

__all__ = ["CLUSTER", "INSTALLATION", "ROLE", "RULE_SUFFIX", "group_of", "mark_of", "name_of", "tags_of"]

INSTALLATION, CLUSTER, ROLE, OWNER = "cumulo-installation", "cumulo-cluster", "cumulo-role", "cumulo-owner"
#: The role of a cluster's network (its resource group, where the NSG lives): the cloud layer's firewall rule.
RULE_ROLE = "scheduler-tls"
RULE_SUFFIX = f"-{RULE_ROLE}"


def name_of(mark: Mark) -> str:
    """The name of a marked resource: ``cumulo-<installation>-<cluster id>[-<role>]`` (a VM's name, and
    without a role the cluster's resource group and SSH key)."""
    parts = ["cumulo", str(mark.installation or "x"), str(mark.cluster_id)]
    if mark.role:
        parts.append(mark.role)
    return "-".join(parts)


def group_of(mark: Mark) -> str:
    """The resource group that holds everything of the mark's cluster."""
    return name_of(Mark(mark.installation, mark.cluster_id))


def _owner() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return socket.gethostname()


def tags_of(mark: Mark) -> dict[str, str]:
    """The tags that mark a resource (ARM's ``tags`` object)."""
    return {INSTALLATION: str(mark.installation), CLUSTER: str(mark.cluster_id), ROLE: mark.role or "cluster",
            OWNER: _owner()}


def mark_of(tags: Iterable[tuple[str, str]]) -> Mark | None:
    """The mark a resource's tags carry; None when cumulo did not make it."""
    found = dict(tags)
    if INSTALLATION not in found and CLUSTER not in found:
        return None
    role = found.get(ROLE, "")
    return Mark(found.get(INSTALLATION) or None, found.get(CLUSTER) or None, "" if role == "cluster" else role)
