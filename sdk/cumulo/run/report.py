"""What a headless run did: :class:`RunReport`, its exit status and the lines ``cumulo run`` prints.

Exit status: 0 ok, 1 a cell failed (it is named) or a stop failed, 130 Ctrl-C, 143 SIGTERM.
A failing cell is named as the user numbers it in the notebook they gave (the injected
parameters cell not counted) with its first line (:func:`describe_cell`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..share import _hardware

_EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


@dataclass
class RunReport:
    """What a headless run did: outcome, where the copy is, time, clusters and their cost."""

    source: Path
    out: Path
    ok: bool = False
    wall_seconds: float = 0.0
    teardown_seconds: float = 0.0
    failed_cell: int | None = None  # 1-based, as the cell is numbered in the notebook given
    failure: str | None = None
    interrupted: str | None = None  # "SIGINT" or "SIGTERM"
    clusters: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    left_open: list[str] = field(default_factory=list)
    killed_processes: int = 0

    @property
    def exit_code(self) -> int:
        """0 ok; 130/143 interrupted; 1 a failed cell or a cluster that may still bill."""
        if self.interrupted:
            return _EXIT_SIGNAL.get(self.interrupted, 1)
        return 0 if self.ok and not self.left_open else 1

    def text(self) -> str:
        """What ``cumulo run`` prints."""
        if self.interrupted:
            head = f"cumulo run: {self.source.name} interrupted ({self.interrupted})"
        elif self.failure:
            head = f"cumulo run: {self.source.name} FAILED: {self.failure}"
        else:
            head = f"cumulo run: {self.source.name} ran"
        lines = [f"{head} in {self.wall_seconds:.1f}s"]
        cost = self.summary.get("cost")
        gpu_h = self.summary.get("gpu_hours") or 0.0
        money = (f"${cost:,.4f} ({self.summary.get('cost_kind')}: {self.summary.get('cost_basis')})"
                 if cost is not None else "no rate set (set cumulo.cost.rate-per-worker-hour to price local workers)")
        if self.clusters:
            names = ", ".join(f"{c['name']} ({c['provider']}, {_hardware(c)})" for c in self.clusters)
            lines.append(f"  clusters: {names}; torn down in {self.teardown_seconds:.1f}s")
            lines.append(f"  cost: {money}" + (f"; {gpu_h:.3f} GPU-hours" if gpu_h else ""))
        else:
            lines.append("  no cluster started")
        if self.killed_processes:
            lines.append(f"  killed {self.killed_processes} process(es) the kernel left behind")
        for name in self.left_open:
            lines.append(f"  WARNING: cluster {name} could not be stopped and may still bill: run `cumulo down {name}`")
        lines.append(f"  executed copy: {self.out}")
        return "\n".join(lines)


def describe_cell(nb: Any, index: int, injected: int | None) -> tuple[int | None, str]:
    """(1-based number in the notebook as given, 'cell 5 (`x = 1/0`)') for an executed index."""
    cell = nb.cells[index]
    if injected is not None and index == injected:
        return None, "the injected parameters cell"
    number = index + 1 - (1 if injected is not None and index > injected else 0)
    first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")), "")
    first = first if len(first) <= 60 else first[:57] + "..."
    return number, f"cell {number} (`{first}`)"
