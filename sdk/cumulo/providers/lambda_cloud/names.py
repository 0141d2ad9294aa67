"""How cumulo names what it creates at Lambda, and how a name is read back.

Lambda instances carry no tags cumulo relies on, only names; firewall rules
only descriptions; SSH keys only names. So every one of them is named

    cumulo-<installation id>-<cluster id>[-<role>]

where the installation id is the registry's own (``Registry.installation_id``).
A sweep can then tell this installation's leftovers (safe to terminate when
their cluster is unknown or closed) from anything another laptop, venv or
teammate started on the same account (only ever reported). Names from cumulo
versions before the installation id (``cumulo-<cluster id>-<role>``) are read
as "legacy": their installation is unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PREFIX", "PROVIDER", "CumuloName", "cluster_prefixes", "instance_name", "key_name", "parse", "rule_name"]

#: The provider's name in the registry (resources are keyed by it).
PROVIDER = "lambda"

#: Every instance, firewall rule and SSH key cumulo creates at Lambda starts with this.
PREFIX = "cumulo-"
_CURRENT = re.compile(r"^cumulo-([0-9a-f]{8})-([0-9a-zA-Z]+)(?:-(.+))?$")
_LEGACY = re.compile(r"^cumulo-([0-9a-zA-Z]+)-(.+)$")


@dataclass(frozen=True)
class CumuloName:
    """A name cumulo gave: whose installation (None for the legacy format), which cluster, which role."""

    installation: str | None
    cluster_id: str
    role: str


def instance_name(installation: str, cluster_id: str, role: str) -> str:
    """The name of one instance: role "head" or "worker-<n>"."""
    return f"{PREFIX}{installation}-{cluster_id}-{role}"


def rule_name(installation: str, cluster_id: str) -> str:
    """The description of the cluster's firewall rule (its scheduler's TLS port)."""
    return f"{PREFIX}{installation}-{cluster_id}-scheduler-tls"


def key_name(installation: str, cluster_id: str) -> str:
    """The name of the cluster's own SSH key at Lambda."""
    return f"{PREFIX}{installation}-{cluster_id}"


def cluster_prefixes(installation: str, cluster_id: str) -> tuple[str, ...]:
    """Name prefixes of a cluster's instances: this format, and the legacy one (a row from an older cumulo)."""
    return f"{PREFIX}{installation}-{cluster_id}-", f"{PREFIX}{cluster_id}-"


def parse(name: str) -> CumuloName | None:
    """Read a name back; None for a name cumulo did not give."""
    m = _CURRENT.match(name or "")
    if m:
        return CumuloName(m.group(1), m.group(2), m.group(3) or "")
    m = _LEGACY.match(name or "")
    if m:
        return CumuloName(None, m.group(1), m.group(2))
    return None
