"""The ``%%cumulo`` cell magic: run the cell on a worker of the attached cluster.

    %%cumulo --gpu --in df,params --out model,metrics
    model = fit(df, **params)        # runs on a (GPU) worker
    metrics = evaluate(model)
    print("done")                    # printed here, while it runs

Registered by ``%load_ext cumulo`` (see :mod:`cumulo.magics`); the mechanism is
:func:`cumulo.remote_cell.run_cell`.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .remote_cell import run_cell

__all__ = ["CellMagics"]


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


@magics_class
class CellMagics(Magics):
    """Holds ``%%cumulo``."""

    @magic_arguments()
    @argument("--gpu", action="store_true", help="run on a worker that has a GPU (error if none)")
    @argument("--in", dest="inputs", default="", metavar="a,b", help="notebook variables sent to the cell")
    @argument("--out", dest="outputs", default="", metavar="x,y", help="cell variables brought back")
    @argument(
        "--cluster", default=None, metavar="VAR",
        help="notebook variable holding the cluster (default: the last one connected)",
    )
    @cell_magic("cumulo")  # type: ignore[arg-type]
    def cumulo(self, line: str, cell: str) -> None:
        """Run this cell on one worker of the cluster; see ``%%cumulo?``."""
        args = parse_argstring(self.cumulo, line)
        ns: dict[str, Any] = self.shell.user_ns  # type: ignore[union-attr]
        missing = [n for n in _names(args.inputs) if n not in ns]
        if missing:
            raise UsageError(f"%%cumulo --in names {missing}, which this notebook has not defined yet.")
        cluster = None
        if args.cluster is not None:
            if args.cluster not in ns:
                raise UsageError(f"%%cumulo --cluster {args.cluster}: no such variable in this notebook.")
            cluster = ns[args.cluster]
        outputs = _names(args.outputs)
        values = run_cell(
            cell, cluster, inputs={n: ns[n] for n in _names(args.inputs)}, outputs=outputs, gpu=args.gpu
        )
        ns.update(values)
