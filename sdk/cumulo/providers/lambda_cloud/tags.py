"""This installation's mark as Lambda launch tags: who owns an instance, whatever it is renamed to.

An instance launched by cumulo carries ``cumulo-installation``, ``cumulo-cluster``
and ``cumulo-role`` tags (lower-case keys of letters, digits and '-', as
Lambda's launch API accepts); teardown and the orphan sweep read them first,
and fall back to the name (names.py) for what has no tags.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..cloud.adapter import Mark

__all__ = ["CLUSTER", "INSTALLATION", "ROLE", "mark_of", "tags_of"]

INSTALLATION = "cumulo-installation"
CLUSTER = "cumulo-cluster"
ROLE = "cumulo-role"


def tags_of(mark: Mark) -> dict[str, str]:
    """The launch tags that carry ``mark``."""
    return {INSTALLATION: str(mark.installation or ""), CLUSTER: str(mark.cluster_id or ""), ROLE: mark.role}


def mark_of(labels: Iterable[tuple[str, str]]) -> Mark | None:
    """The mark in an instance's tags; None when it carries none of cumulo's (then its name decides)."""
    tags = dict(labels)
    if INSTALLATION not in tags:
        return None
    return Mark(tags[INSTALLATION] or None, tags.get(CLUSTER) or None, tags.get(ROLE, ""))
