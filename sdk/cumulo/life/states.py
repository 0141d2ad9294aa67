"""A cluster row's states and the moves between them: the table cumulo.life.lifecycle enforces.

::

    starting ──> running ──> closing ──> closed
       │            │  ▲        │  └───> lost, failed
       │            │  └────────┘        (a scheduler we do not own: the stop failed, it still runs)
       │            ├──> lost            (the scheduler is gone and nothing bills on its own)
       │            └──> stop-failed
       ├──> failed                       (the start failed and was cleaned up: nothing bills)
       ├──> lost
       └──> stop-failed ──> closing      (a stop or cleanup raised: resources may still bill;
                  └───────> closed, failed, lost   open, shown with a Stop button, retried
                                                    by `cumulo down`, Stop and every reaper)

closed, failed and lost are final: nothing runs or bills, and no move leaves them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["FINAL", "OPEN", "State", "TRANSITIONS", "allowed_from"]


class State(str, enum.Enum):
    """A cluster row's state. A ``str`` so that it is stored and compared as its value."""

    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    STOP_FAILED = "stop-failed"
    CLOSED = "closed"
    FAILED = "failed"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value

    @property
    def is_open(self) -> bool:
        """Whether something may still run (and bill) for a row in this state."""
        return self in OPEN

    @property
    def label(self) -> str:
        """How the state reads to a user (the one that matters says it may bill)."""
        return "stop failed: may still bill" if self is State.STOP_FAILED else self.value


#: States in which resources may still run and bill.
OPEN = frozenset({State.STARTING, State.RUNNING, State.CLOSING, State.STOP_FAILED})
#: States that are never left: nothing runs or bills.
FINAL = frozenset({State.CLOSED, State.FAILED, State.LOST})

#: Which state may follow which.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.STARTING: frozenset({State.RUNNING, State.CLOSING, State.FAILED, State.STOP_FAILED, State.LOST}),
    State.RUNNING: frozenset({State.CLOSING, State.LOST, State.STOP_FAILED}),
    State.CLOSING: frozenset({State.CLOSED, State.FAILED, State.LOST, State.STOP_FAILED, State.RUNNING}),
    State.STOP_FAILED: frozenset({State.CLOSING, State.CLOSED, State.FAILED, State.LOST}),
    State.CLOSED: frozenset(),
    State.FAILED: frozenset(),
    State.LOST: frozenset(),
}


def allowed_from(to: State) -> frozenset[State]:
    """The states from which ``to`` may be entered."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if to in nxt)
