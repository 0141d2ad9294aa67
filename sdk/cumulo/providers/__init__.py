"""Compute backends behind one contract (see base.py). Looked up by name, imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from ..exceptions import SpecError
from .base import Deployment, Orphan, Provider

__all__ = ["Deployment", "Orphan", "Provider", "get_provider", "known_providers", "provider_class",
           "register_provider"]

_BUILTIN = {
    "local": "cumulo.providers.local:LocalProvider",
    "address": "cumulo.providers.address:AddressProvider",
    "lambda": "cumulo.providers.lambda_cloud:LambdaProvider",
}
_registered: dict[str, type[Provider]] = {}


def register_provider(name: str, cls: type[Provider] | str) -> None:
    """Make a provider available to connect() under ``name`` (a class or 'module:Class')."""
    if isinstance(cls, str):
        _BUILTIN[name] = cls
    else:
        _registered[name] = cls


def known_providers() -> list[str]:
    """Names connect() accepts as a provider."""
    return sorted(set(_BUILTIN) | set(_registered))


def provider_class(name: str) -> type[Provider]:
    """The class of the provider called ``name``; SpecError naming the known ones otherwise."""
    if name in _registered:
        return _registered[name]
    target = _BUILTIN.get(name)
    if target is None:
        raise SpecError(f"unknown provider {name!r}; known providers: {', '.join(known_providers())}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _registered[name] = cls
    return cls


def get_provider(name: str, **options: Any) -> Provider:
    """An instance of the provider called ``name`` (its own settings come from config).

    ``options`` are the connect() arguments every provider accepts (security,
    allow_insecure, progress); see Provider.__init__.
    """
    return provider_class(name)(**options)
