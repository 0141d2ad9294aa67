"""Run inside the kernel of ``cumulo run``: make ``cumulo.connect(...)`` launch the run's spec.

The runner executes ``import cumulo.run; cumulo.run.override_connect(spec, named)`` in the
kernel before the first cell (that spelling, so that a kernel with another cumulo release
still resolves it). The wrapped ``connect`` gives the provider and the fields the spec names
precedence over the call's own; re-attaching by name, connecting to an address and
``spec_from=`` calls pass through.
"""

from __future__ import annotations

import functools
from typing import Any

import cumulo

from .. import cluster as cluster_module
from ..share import HARDWARE_FIELDS
from ..spec import DASK_ALIASES

#: connect() keywords that are not spec fields (a call with only these and name= re-attaches).
_CONNECT_KEYWORDS = {"name", "security", "allow_insecure", "asynchronous", "registry", "confirm", "keep_alive"}


def override_connect(spec: dict[str, Any] | None = None, named: dict[str, dict[str, Any]] | None = None) -> None:
    """In a kernel run by ``cumulo run``: make ``cumulo.connect(...)`` launch ``spec`` (``--on``), or, for a
    call naming a cluster in ``named`` (the specs a notebook carries, by cluster name), that cluster's spec.

    The provider and the fields the spec names replace the call's own; with another provider
    than the call's, its hardware arguments (gpu, instance type, region, ...) are dropped.
    Re-attaching by name, connecting to an address and ``spec_from=`` calls pass through.
    """
    original = cluster_module.connect
    named = dict(named or {})

    @functools.wraps(original)
    def connect(target: str | None = None, **kwargs: Any) -> Any:
        reattach = target is None and kwargs.get("name") is not None and not set(kwargs) - _CONNECT_KEYWORDS
        if reattach or (isinstance(target, str) and "://" in target) or kwargs.get("spec_from") is not None:
            return original(target, **kwargs)
        chosen = spec if spec is not None else named.get(str(kwargs.get("name")))
        if chosen is None:
            return original(target, **kwargs)
        kwargs = {DASK_ALIASES.get(k, k): v for k, v in kwargs.items()}  # the notebook's n_workers= is workers=
        fields = dict(chosen)
        provider = fields.pop("provider", "local")
        if fields.pop("confirm", False):
            kwargs["confirm"] = True
        if (target or "local") != provider:
            kwargs = {k: v for k, v in kwargs.items() if k not in HARDWARE_FIELDS}
        kwargs.update(fields)
        return original(provider, **kwargs)

    cumulo.connect = connect  # type: ignore[assignment]
