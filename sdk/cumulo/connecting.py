"""What a ``connect()`` call asks for: an open cluster to re-attach to, or the validated spec of a new one.

:func:`cumulo.connect` takes a target (a provider name, a scheduler address, or
nothing), a name and keyword arguments. Turning them into a decision is its own
idea, separate from the cluster object: resolve the target to a provider, refuse
typos and unsafe starts before anything runs, fold a provider's own options and
the flags into the spec, and find a cluster that is already open under the name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import config
from ._spawn import check_main_guard
from .exceptions import ClusterNotFound, SpecError
from .life.registry import ClusterRecord, Registry
from .providers import DEFAULT as DEFAULT_PROVIDER
from .providers import known_providers, provider_for_address
from .providers import provider_class as get_provider_class
from .spec import ClusterSpec, did_you_mean, spec_arguments, validate_name

__all__ = ["Request", "request"]


@dataclass(frozen=True)
class Request:
    """What to connect to: ``record``, an open cluster to re-attach to, or ``spec``, a new one to start.

    ``registry`` is where either lives.
    """

    registry: Registry
    record: ClusterRecord | None = None
    spec: ClusterSpec | None = None


def request(
    target: str | None,
    *,
    name: str | None,
    registry: Registry | None,
    confirm: bool,
    keep_alive: bool,
    spec_from: Any,
    spec_fields: dict[str, Any],
    keywords: Iterable[str],
) -> Request:
    """Decide what a ``connect()`` call asks for (see :func:`cumulo.connect` for the arguments).

    ``keywords``: connect()'s own keyword names, which are not spec fields (a typo
    near one of them is named in the SpecError). Nothing starts here: refusals (a bad
    target, a bad cumulo.* setting, a name taken by another kind of cluster, a script
    without a main guard) come before any row or process exists.
    """
    if spec_from is not None:
        from .share import merge_spec_from  # only for spec_from=: the notebook reader and secret scanner

        target, spec_fields = merge_spec_from(spec_from, target, spec_fields)
    reattach = target is None and name is not None and not spec_fields
    provider_name, address = (None, None) if reattach else _resolve_target(target)
    # a script re-imported by multiprocessing's spawn would start clusters in every child
    check_main_guard(starts_processes=provider_name is not None
                     and get_provider_class(provider_name).lives_in_owner_process)
    config.validate()  # a bad cumulo.* value is a clear error naming the key, before anything starts
    registry = registry or Registry()
    if name is not None:
        validate_name(name)
    if reattach:
        assert name is not None
        record = registry.find_open(name)
        if record is None:
            raise ClusterNotFound(_not_found_message(name, registry))
        return Request(registry, record=record)

    assert provider_name is not None
    spec_fields = spec_arguments(spec_fields, also=keywords,  # n_workers=; a typo: SpecError
                                 others_allowed=get_provider_class(provider_name).takes_own_options)
    if get_provider_class(provider_name).takes_own_options:
        fields = {f.name for f in dataclasses.fields(ClusterSpec)}
        own = {k: spec_fields.pop(k) for k in list(spec_fields) if k not in fields}
        if own:
            spec_fields["options"] = {**spec_fields.get("options", {}), **own}
    for flag, value in (("confirm", confirm), ("keep_alive", keep_alive)):
        if value:
            spec_fields["options"] = {**spec_fields.get("options", {}), flag: True}
    spec = ClusterSpec(provider=provider_name, name=name, address=address, **spec_fields)
    if name is not None:
        existing = registry.find_open(name)
        if existing is not None:
            # an ssh:// or gateway:// target is the spec's address; the row's is the scheduler's
            if existing.provider != provider_name or (address and address not in (existing.address,
                                                                                 existing.spec.get("address"))):
                raise SpecError(
                    f"a {existing.provider} cluster named {name!r} is already open at {existing.address}; "
                    f"attach with cumulo.connect(name={name!r}), stop it with `cumulo down {name}`, "
                    "or choose another name"
                )
            return Request(registry, record=existing)
    return Request(registry, spec=spec)


def _resolve_target(target: str | None) -> tuple[str, str | None]:
    if target is None:
        return DEFAULT_PROVIDER, None
    if not isinstance(target, str):
        raise SpecError(f"connect() target must be a string, not {type(target).__name__}")
    if "://" in target:
        return provider_for_address(target), target
    if ":" in target and target.rsplit(":", 1)[-1].isdigit():
        raise SpecError(f"{target!r} has no scheme: write 'tcp://{target}' (or 'tls://{target}' with certificates)")
    if target in known_providers():
        return target, None
    raise SpecError(
        f"unknown connect() target {target!r}{did_you_mean(target, known_providers())}: use a scheduler address "
        f"('tcp://host:port', 'tls://host:port') or a provider name ({', '.join(known_providers())})"
    )


def _not_found_message(name: str, registry: Registry) -> str:
    open_names = [r.name for r in registry.list(include_closed=False)]
    latest = registry.latest(name)
    msg = f"no open cluster named {name!r}"
    if latest is not None:
        msg += f" (the last one was {latest.state}" + (f": {latest.note}" if latest.note else "") + ")"
    msg += ". Open clusters: " + (", ".join(open_names) if open_names else "none")
    msg += f". Start one with cumulo.connect('local', name={name!r})."
    return msg
