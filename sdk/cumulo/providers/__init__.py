"""Compute backends behind one contract (see base.py), looked up by name and imported lazily.

Built-in providers are listed in ``_BUILTIN``; other packages bring theirs through the
``cumulo.providers`` entry-point group (``name = "package.module:ProviderClass"``), as
dask and fsspec find their plugins: installing such a package is all it takes for
connect(), the guards, ``cumulo ls``, ``share``, ``reap`` and ``prices`` to know it
(docs/providers.md). A provider's own config section, credentials and prices are
declared on its class; :func:`provider_classes` loads them all for code that needs
every provider's declarations (config validation, the workers' scrub list, share's
scan, the price catalog).
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .. import config
from ..exceptions import ProviderError, SpecError, did_you_mean
from .base import Deployment, Orphan, Provider

__all__ = ["DEFAULT", "ENTRY_POINT_GROUP", "Deployment", "Orphan", "Provider", "get_provider", "known_providers",
           "provider_class", "provider_classes", "provider_for_address", "register_provider"]

logger = logging.getLogger("cumulo.providers")

#: The provider connect() uses when given no target: a cluster on this machine.
DEFAULT = "local"
#: The entry-point group through which other packages add providers.
ENTRY_POINT_GROUP = "cumulo.providers"

_BUILTIN = {
    "local": "cumulo.providers.local:LocalProvider",
    "address": "cumulo.providers.address:AddressProvider",
    "lambda": "cumulo.providers.lambda_cloud:LambdaProvider",
    "ssh": "cumulo.providers.ssh:SSHProvider",
    "gateway": "cumulo.providers.gateway:GatewayProvider",
    "aws": "cumulo.providers.aws:AWSProvider",
    "azure": "cumulo.providers.azure:AzureProvider",
}
#: Address schemes (``scheme://...``) and the provider that attaches to or launches on them.
_SCHEMES = {"tcp": "address", "tls": "address", "ssh": "ssh", "gateway": "gateway", "gateway+https": "gateway"}
_registered: dict[str, type[Provider]] = {}


@functools.cache
def _plugins() -> dict[str, EntryPoint]:
    """Providers other packages declare in the ``cumulo.providers`` entry-point group (not imported yet)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _BUILTIN}


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
        for cls in provider_classes():  # a plugin's schemes are known once its class is loaded
            for own in cls.schemes:
                _SCHEMES.setdefault(own, cls.name)
    if scheme not in _SCHEMES:
        raise SpecError(f"unknown address scheme {scheme!r} in {address!r}{did_you_mean(scheme, _SCHEMES)}; known: "
                        + ", ".join(f"{s}://" for s in sorted(_SCHEMES)))
    return _SCHEMES[scheme]


def known_providers() -> list[str]:
    """Names connect() accepts as a provider: built in, registered, and from installed packages."""
    return sorted(set(_BUILTIN) | set(_registered) | set(_plugins()))


def provider_class(name: str) -> type[Provider]:
    """The class of the provider called ``name``; SpecError naming the known ones otherwise."""
    if name in _registered:
        return _registered[name]
    target = _BUILTIN.get(name)
    if target is not None:
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    elif name in _plugins():
        ep = _plugins()[name]
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party package: say which, and how to get rid of it
            raise ProviderError(f"the provider {name!r} from the package that declares it ({ep.value}) failed to "
                                f"load: {type(exc).__name__}: {exc}. Fix or uninstall that package.") from exc
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise ProviderError(f"the entry point {name} = {ep.value} (group {ENTRY_POINT_GROUP}) is not a "
                                "cumulo.providers.Provider subclass; fix or uninstall the package that declares it")
    else:
        raise SpecError(f"unknown provider {name!r}{did_you_mean(name, known_providers())}; known providers: "
                        f"{', '.join(known_providers())}")
    _registered[name] = cls
    return cls


def provider_classes() -> list[type[Provider]]:
    """Every known provider's class, for code that needs all their declarations.

    A provider that cannot be loaded (a broken package, a missing optional dependency) is
    left out with a warning in the log: one bad plugin must not stop every other provider.
    """
    out = []
    for name in known_providers():
        try:
            out.append(provider_class(name))
        except (ImportError, ProviderError) as exc:
            logger.warning("provider %s left out: %s", name, exc)
    return out


def get_provider(name: str, **options: Any) -> Provider:
    """An instance of the provider called ``name`` (its own settings come from config).

    ``options`` are the connect() arguments every provider accepts (security,
    allow_insecure, progress); see Provider.__init__.
    """
    return provider_class(name)(**options)


def _load_config_sections() -> None:
    """Load every provider's class, and so merge its config section (Provider.__init_subclass__)."""
    provider_classes()


config.add_section_source(_load_config_sections)
