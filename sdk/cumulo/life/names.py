"""Readable generated cluster names ('swift-otter-3f2a'), short enough to type in `cumulo down`."""

from __future__ import annotations

import secrets

__all__ = ["new_name"]

_ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fleet", "keen", "lucid", "nimble", "quiet", "swift", "vivid")
_NOUNS = ("otter", "heron", "lynx", "marten", "osprey", "puffin", "raven", "stoat", "tern", "vole", "wren", "yak")


def new_name() -> str:
    """A fresh name: adjective-noun-4 hex digits (collisions are caught by the registry's unique index)."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(2)}"
