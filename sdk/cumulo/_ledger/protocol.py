"""The names a client, the workers and the scheduler's ledger agree on.

Kept apart from the ledger's code so that what crosses process boundaries (the plugin's
name, the version of its answer, the task annotation naming a cell, the power sampler's
worker metric) is in one place; cumulo.cost.cellcost and cumulo.cost.metering read them from here
(through :mod:`cumulo._ledger`).
"""

from __future__ import annotations

PLUGIN_NAME = "cumulo-ledger"
#: v3: cells carry ``notebook`` and ``first_line``; the cell summary carries ``all_cells``.
LEDGER_VERSION = 3
#: The task annotation that names the notebook cell a task was submitted from.
CELL_ANNOTATION = "cumulo_cell"
#: The worker metric cumulo's power sampler reports (cumulo._energy.METRIC).
ENERGY_METRIC = "cumulo-energy"
