"""The usage ledger that runs inside a Dask scheduler (no cumulo import needed there).

This package is deliberately self-contained: its modules import only the standard
library, ``distributed`` and each other, because the scheduler it is sent to may not
have cumulo installed. cumulo.cost.metering registers it with
``cloudpickle.register_pickle_by_value`` (the package: cloudpickle counts its
submodules in), so the plugin class and everything it uses travel by value.

What it records, in bounded memory (aggregates, never a list per task):
  - workers joining and leaving: threads, memory limit, GPU model and count;
  - busy task-seconds per worker (``compute`` start/stop pairs of finished or
    erred tasks, as reported by the workers);
  - GPU utilisation and memory where NVML reports them (worker metrics),
    integrated over time; a ring of recent cluster-wide samples for sparklines;
  - GPU power and energy where workers run cumulo's power sampler
    (:mod:`cumulo._energy`, the ``cumulo-energy`` worker metric); nothing where
    nothing is measured;
  - per notebook cell: every graph a cell submits carries the annotation
    ``cumulo_cell`` = ``"<kernel>/<seq>"`` (set by cumulo.cost.cellcost with
    ``dask.annotate`` as each graph is submitted). Tasks submitted, finished, erred
    and still running, task-seconds, busy worker-seconds, GPU-seconds and GPU
    energy are added up per tag, for the last ``max_cells`` tags; older tags
    are folded into one "earlier cells" bucket and untagged work goes to
    "outside cells", so the buckets always add up to the totals.

A task is "running" (for its cell) from the moment it enters one of the
scheduler's active states (waiting, queued, processing, no-worker) until it
leaves them; a task rescheduled after a worker died leaves and re-enters, and
a cancelled one just leaves.

Clients read it with the ``cumulo_ledger`` and ``cumulo_cell`` RPC handlers (no
pickled code runs). After a cell, the kernel puts a ``cumulo-cell-mark`` on its
batched stream (the same stream as the cell's graphs, so it arrives after
them) with the cell's start and end; ``cumulo_cell`` waits (briefly) for that
mark, so it never answers before the cell's graphs were seen. The mark also
names the cell for people: its execution count, its notebook's file name and its
first line (each cut to ``_MAX_TEXT`` characters), so that every view (the inline
meter, the sidebar, ``cumulo usage``) names a cell the same way.

The modules, one idea each:
  - :mod:`.protocol`: the names clients and workers share with the ledger;
  - :mod:`.records`: what is kept per worker and per cell (bucket);
  - :mod:`.plugin`: :class:`UsageLedger`, the scheduler plugin and its event hooks;
  - :mod:`.sampling`: the periodic sample (GPU utilisation, energy, busy or idle);
  - :mod:`.reading`: what the RPC handlers answer.
"""

from __future__ import annotations

from .plugin import UsageLedger
from .protocol import CELL_ANNOTATION, ENERGY_METRIC, LEDGER_VERSION, PLUGIN_NAME
from .records import EARLIER, OUTSIDE, _Cell, _Worker

# distributed sends a plugin with cloudpickle only when the module of its class, by exact name,
# is registered by value (metering registers this package): the class is named as this package's.
UsageLedger.__module__ = __name__

__all__ = ["CELL_ANNOTATION", "EARLIER", "ENERGY_METRIC", "LEDGER_VERSION", "OUTSIDE", "PLUGIN_NAME", "UsageLedger",
           "_Cell", "_Worker"]
