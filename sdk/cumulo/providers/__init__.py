"""Compute backends behind one contract (see base.py). Looked up by name, imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from ..exceptions import SpecError
from .base import Deployment, Orphan, Provider

__all__ = ["DEFAULT", "Deployment", "Orphan", "Provider", "get_provider", "known_providers", "provider_class",
           "provider_for_address", "register_provider"]

#: The provider connect() uses when given no target: a cluster on this machine.
DEFAULT = "local"

_BUILTIN = {
    "local": "cumulo.providers.local:LocalProvider",
    "address": "cumulo.providers.address:AddressProvider",
    "lambda": "cumulo.providers.lambda_cloud:LambdaProvider",
    "ssh": "cumulo.providers.ssh:SSHProvider",
    "gateway": "cumulo.providers.gateway:GatewayProvider",
}
#: Address schemes (``scheme://...``) and the provider that attaches to or launches on them.
_SCHEMES = {"tcp": "address", "tls": "address", "ssh": "ssh", "gateway": "gateway", "gateway+https": "gateway"}
_registered: dict[str, type[Provider]] = {}


def register_provider(name: str, cls: type[Provider] | str, *, schemes: tuple[str, ...] = ()) -> None:
    """Make a provider available to connect() under ``name`` (a class or 'module:Class'), and for
    targets written ``scheme://...`` with one of ``schemes``."""
    if isinstance(cls, str):
        _BUILTIN[name] = cls
    else:
        _registered[name] = cls
    for scheme in schemes:
        _SCHEMES[scheme] = name


def provider_for_address(address: str) -> str:
    """The provider for a ``scheme://...`` target; SpecError naming the schemes known otherwise."""
    scheme = address.split("://", 1)[0]
    if scheme not in _SCHEMES:
        from ..spec import did_you_mean

        raise SpecError(f"unknown address scheme {scheme!r} in {address!r}{did_you_mean(scheme, _SCHEMES)}; known: "
                        + ", ".join(f"{s}://" for s in sorted(_SCHEMES)))
    return _SCHEMES[scheme]


def known_providers() -> list[str]:
    """Names connect() accepts as a provider."""
    return sorted(set(_BUILTIN) | set(_registered))


def provider_class(name: str) -> type[Provider]:
    """The class of the provider called ``name``; SpecError naming the known ones otherwise."""
    if name in _registered:
        return _registered[name]
    target = _BUILTIN.get(name)
    if target is None:
        from ..spec import did_you_mean

        raise SpecError(f"unknown provider {name!r}{did_you_mean(name, known_providers())}; known providers: "
                        f"{', '.join(known_providers())}")
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
