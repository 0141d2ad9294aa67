"""IPython integration: ``%load_ext cumulo``.

Loading the extension turns on the per-cell cost line (cumulo.cellcost) for
every cluster connected in this kernel, now and later. Magics (``%cumulo``,
``%%cumulo``) are registered here too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ip: Any) -> None:
    """Called by ``%load_ext cumulo``: register the per-cell hooks and follow open clusters."""
    from . import cellcost
    from .cluster import _live

    cellcost.register(ip)
    from ._cell_magic import CellMagics  # %%cumulo: run a cell on a worker (remote_cell.py)

    ip.register_magics(CellMagics)
    for cluster in list(_live):
        cellcost.track(cluster)


def unload_ipython_extension(ip: Any) -> None:
    """Called by ``%unload_ext cumulo``: remove the per-cell hooks."""
    from . import cellcost

    cellcost.unregister(ip)
