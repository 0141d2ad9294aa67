"""Run a notebook headless: ``cumulo run NOTEBOOK.ipynb [--on SPEC] [-p key=value] [-o OUT]``.

:func:`run_notebook` executes every cell in a fresh kernel with nbclient, writes the executed
copy (also when a cell fails or the run is interrupted), prints the wall time and the cost, and
records both, with the spec of each cluster the notebook started, under the copy's
``metadata.cumulo`` (what ``cumulo share`` embeds and ``connect(spec_from=...)`` reads).

Parameters, papermill-style: ``-p rows=100000`` becomes ``rows = 100000`` in a cell injected
after the cell tagged ``parameters`` (at the top when there is none) and tagged
``injected-parameters``; values are Python literals, anything else is a string.

``--on SPEC`` (``local``, ``lambda,gpu=A10,workers=4``, a JSON file or another notebook whose
spec to use) makes every ``cumulo.connect(...)`` call of the notebook launch that spec: the
kernel's ``cumulo.connect`` is wrapped before the first cell (:func:`override_connect`), so the
provider and the fields SPEC names replace the notebook's own arguments; re-attaching by name and
connecting to an address are left alone. Without ``--on``, the specs the notebook carries
(``metadata.cumulo.clusters``, from an earlier run or a share) apply by cluster name: a
``connect(..., name="etl")`` call gets the spec recorded for ``etl`` (the same as its own arguments
unless that run used ``--on``); calls naming no recorded cluster keep their own arguments.

Teardown, always: on success, on a failing cell, on Ctrl-C (SIGINT) and on SIGTERM.

1. the kernel closes every cluster it started (``cumulo.cluster``'s at-exit closer, run as a
   last cell after interrupting whatever still runs);
2. the kernel is shut down (gracefully, then killed);
3. registry rows the kernel owned (found by its process id) that are still open are stopped
   from this process through the lifecycle (:func:`cumulo.life.inventory.stop_record`), and rows of
   clusters that died with the kernel are marked lost (:func:`cumulo.life.inventory.reconcile`);
4. whatever is left of the kernel's process group (it runs in its own session) is killed.

A row that could not be stopped is reported as "may still bill" and makes the exit status 1.
Exit status: 0 ok, 1 a cell failed (it is named) or a stop failed, 130 Ctrl-C, 143 SIGTERM.

The modules, one idea each:
  - :mod:`.runner`: :func:`run_notebook`, the run from reading the notebook to writing its copy;
  - :mod:`.parameters`: ``-p key=value`` and the injected parameters cell;
  - :mod:`.specs`: ``--on SPEC`` and the specs a notebook carries, by cluster name;
  - :mod:`.override`: :func:`override_connect`, run inside the kernel before the first cell;
  - :mod:`.kernel`: the kernel to run in, running code in it, and steps 1 and 2 of the teardown;
  - :mod:`.leftovers`: steps 3 and 4, the rows and processes the kernel left behind;
  - :mod:`.report`: :class:`RunReport`, what the run did, its exit status and what it prints.
"""

from __future__ import annotations

from .override import override_connect
from .parameters import parse_parameters
from .report import RunReport
from .runner import RUN_SUFFIX, output_path, run_notebook
from .specs import parse_on

__all__ = ["RUN_SUFFIX", "RunReport", "output_path", "override_connect", "parse_on", "parse_parameters",
           "run_notebook"]
