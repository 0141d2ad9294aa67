"""How cumulo marks what it creates at AWS: tags, read back into the cloud layer's Mark.

Every instance, security group and key pair carries ``cumulo:installation``,
``cumulo:cluster``, ``cumulo:role`` and ``cumulo:owner`` (who launched it, for
a teammate reading the console), plus a readable ``Name``. Ownership is decided
by the tags alone: renaming an instance in the console does not hide it from
teardown or the sweep.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable

from ..cloud.adapter import Mark

__all__ = ["INSTALLATION", "CLUSTER", "ROLE", "mark_of", "name_of", "tag_list", "tag_spec"]

INSTALLATION, CLUSTER, ROLE, OWNER = "cumulo:installation", "cumulo:cluster", "cumulo:role", "cumulo:owner"


def name_of(mark: Mark) -> str:
    """The readable name (the ``Name`` tag, the security group's and key pair's name) of a marked resource."""
    parts = ["cumulo", str(mark.installation or "x"), str(mark.cluster_id)]
    if mark.role:
        parts.append(mark.role)
    return "-".join(parts)


def _owner() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return socket.gethostname()


def tag_list(mark: Mark) -> list[dict[str, str]]:
    """The tags that mark a resource, in EC2's ``[{"Key": .., "Value": ..}]`` form."""
    tags = {"Name": name_of(mark), INSTALLATION: str(mark.installation), CLUSTER: str(mark.cluster_id),
            ROLE: mark.role or "key", OWNER: _owner()}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_spec(mark: Mark, *resource_types: str) -> list[dict[str, object]]:
    """``TagSpecifications`` that tag the created resources of these types at creation (never untagged)."""
    return [{"ResourceType": t, "Tags": tag_list(mark)} for t in resource_types]


def mark_of(tags: Iterable[tuple[str, str]]) -> Mark | None:
    """The mark a resource's tags carry; None when cumulo did not make it."""
    found = dict(tags)
    if INSTALLATION not in found and CLUSTER not in found:
        return None
    role = found.get(ROLE, "")
    return Mark(found.get(INSTALLATION) or None, found.get(CLUSTER) or None, "" if role == "key" else role)
