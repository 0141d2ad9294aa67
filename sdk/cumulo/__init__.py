"""cumulo: attach Dask clusters (CPU or GPU) from a notebook and see what they cost.

    >>> import cumulo
    >>> cluster = cumulo.connect()            # the embedded default on this machine
    >>> cluster.backend                       # 'cudf' on GPU workers, else 'pandas'
    >>> cumulo.clusters()                     # every cluster you own, across kernels
"""

from __future__ import annotations

from . import config as _config  # noqa: F401  (merges cumulo.* defaults into dask.config)
from ._version import __version__
from .cluster import Cluster, connect, current
from .exceptions import CumuloError
from .inventory import clusters

__all__ = ["Cluster", "CumuloError", "__version__", "clusters", "connect", "current"]
