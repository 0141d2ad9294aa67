"""A gateway's cluster options as a form: what to pass as ``connect("gateway://...", options=...)``.

Two readings of the same server-side schema: :func:`cluster_options` gives
dask-gateway's own ``Options`` object (it draws itself as a form in a notebook),
and :func:`cluster_form` gives the same fields as plain JSON-able data, for the
JupyterLab sidebar's New cluster form (served by the cumulo server extension).
"""

from __future__ import annotations

import math
from typing import Any

from ...aio import blocking
from ...exceptions import ConnectError
from . import api

__all__ = ["FIELD_KINDS", "cluster_form", "cluster_options", "form_fields"]

#: The kinds of field a form draws, by dask-gateway's field class name (its Integer, Float, ... in options.py).
FIELD_KINDS = {"Integer": "integer", "Float": "float", "String": "string", "Select": "select", "Bool": "bool",
               "Mapping": "mapping"}


def _target(address: str | None, allow_insecure: bool | None) -> api.Target:
    """The gateway to ask: ``address`` as connect() takes it, else dask-gateway's ``gateway.address``."""
    target = api.target_of(address) if address else api.target_from_dask_config()
    api.check_transport(target, allow_insecure)
    return target


def _read(target: api.Target) -> Any:
    """The gateway's ``Options`` (one request, bounded by cumulo.gateway.timeout), read blocking.

    A notebook's main thread, and the Jupyter server's executor threads' callers,
    may already run an event loop: :func:`cumulo.aio.blocking` runs it beside that loop.
    """

    async def read() -> Any:
        async with api.session(target) as gateway:
            try:
                return await gateway.call(gateway.gateway.cluster_options(), "reading its cluster options")
            except ValueError as exc:  # a 404 from something that is not a dask-gateway API
                raise ConnectError(f"{target.url} is not a dask-gateway API ({exc}): check the address "
                                   f"{target.address} (a JupyterHub-hosted gateway lives under "
                                   "/services/dask-gateway)") from None

    return blocking(read())


def cluster_options(address: str | None = None, *, allow_insecure: bool | None = None) -> Any:
    """The gateway's cluster options (its server-side schema) as dask-gateway's ``Options``.

    In a notebook the object draws itself as a form; edit it there (or set
    attributes), then ``cumulo.connect(address, options=dict(opts))``. ``address``
    as connect() takes it; None uses dask-gateway's ``gateway.address`` config.
    Errors are connect()'s: CredentialsError, ConnectError, InsecureAddress.
    """
    return _read(_target(address, allow_insecure))


def _number(value: Any) -> Any:
    """A bound or default as JSON can carry it: None for a missing or non-finite number."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def form_fields(options: Any) -> list[dict[str, Any]]:
    """The fields of a dask-gateway ``Options`` as plain data, in the gateway's order.

    Each is ``{"name", "label", "kind", "default", "min", "max", "choices"}``: kind is
    one of :data:`FIELD_KINDS`' values (``"unknown"`` for a field class dask-gateway
    adds later, drawn as text by the sidebar), ``default`` the value the gateway
    proposes, ``min``/``max`` the bounds of a number (None when unbounded) and
    ``choices`` the values of a select (None otherwise).
    """
    fields = []
    for name, field in options._fields.items():
        kind = next((FIELD_KINDS[cls.__name__] for cls in type(field).__mro__ if cls.__name__ in FIELD_KINDS),
                    "unknown")
        choices = getattr(field, "options", None)
        fields.append({
            "name": str(name),
            "label": str(getattr(field, "label", None) or name),
            "kind": kind,
            "default": _number(field.get()),
            "min": _number(getattr(field, "min", None)),
            "max": _number(getattr(field, "max", None)),
            "choices": [str(c) for c in choices] if kind == "select" and choices is not None else None,
        })
    return fields


def cluster_form(address: str | None = None, *, allow_insecure: bool | None = None) -> dict[str, Any]:
    """The gateway's cluster options as plain data: ``{"address": ..., "fields": [...]}``.

    ``address`` is the gateway as cumulo records it (resolved from dask-gateway's
    ``gateway.address`` config when None); ``fields`` as :func:`form_fields` writes
    them. Credentials come from this process's dask-gateway config, never from the
    caller; errors are cluster_options()'s (SpecError for a malformed address).
    """
    target = _target(address, allow_insecure)
    return {"address": target.address, "fields": form_fields(_read(target))}
