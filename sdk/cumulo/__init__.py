"""cumulo: attach Dask clusters (CPU or GPU) from a notebook and see what they cost.

    >>> import cumulo
    >>> cluster = cumulo.connect()            # the embedded default on this machine
    >>> cluster.backend                       # 'cudf' on GPU workers, else 'pandas'
    >>> cumulo.clusters()                     # every cluster you own, across kernels
"""

from __future__ import annotations

from typing import Any

from . import config as _config  # noqa: F401  (merges cumulo.* defaults into dask.config)
from ._version import __version__
from .cluster import Cluster, connect, current
from .exceptions import CumuloError
from .life.inventory import clusters
from .magics import load_ipython_extension, unload_ipython_extension
from .magics import register_with_running_shell as _register_with_running_shell

__all__ = [
    "Cluster",
    "CumuloError",
    "__version__",
    "clusters",
    "connect",
    "current",
    "from_notebook",
    "gateway_options",
    "load_ipython_extension",
    "prices",
    "unload_ipython_extension",
]


def from_notebook(path: Any, *, cluster: str | int | None = None) -> Any:
    """The cluster spec a shared notebook carries, as a ClusterSpec (see cumulo.share.from_notebook)."""
    from .share import from_notebook as _from_notebook  # loaded on first use: `import cumulo` stays fast

    return _from_notebook(path, cluster=cluster)


def gateway_options(address: str | None = None, **kwargs: Any) -> Any:
    """A dask-gateway's cluster options as a form to edit in the notebook; pass ``dict(opts)`` as
    ``connect(address, options=...)`` (see cumulo.providers.gateway.options.cluster_options)."""
    from .providers.gateway.options import cluster_options  # optional extra: dask-gateway (cumulo[gateway])

    return cluster_options(address, **kwargs)


def prices(gpu: str | None = None, provider: str | None = None, region: str | None = None) -> Any:
    """GPU offers and prices as a DataFrame, cheapest $/GPU-hour first (see cumulo.cost.catalog.prices)."""
    from .cost.catalog import prices as _prices  # heavy (pandas, the price tables): only when asked

    return _prices(gpu=gpu, provider=provider, region=region)


# in a Jupyter kernel, a CumuloError shows as its message under the user's frames (cumulo.debug: all of them)
_register_with_running_shell()

#: Submodules loaded on first use (attribute -> module): ``cumulo.catalog`` keeps the name the docs used
#: before the price catalog moved to cumulo.cost.catalog; ``cumulo.mlflow`` is cumulo.mlops (MLflow autolog).
_SUBMODULES = {name: name for name in ("datasets", "pipeline", "progress", "run", "share", "train")} | {
    "catalog": "cost.catalog", "mlflow": "mlops", "mlops": "mlops"}


def __getattr__(name: str) -> Any:
    """Import ``cumulo.train``, ``cumulo.datasets``, ... on first use, so ``import cumulo`` stays fast."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    raise AttributeError(f"module 'cumulo' has no attribute {name!r}")
