"""A cluster's life, from the first request to the last bill.

- ``states``: the states and the moves between them; ``lifecycle``: the only writer of a
  cluster's state, cost and ownership; ``checkpoint``: what a provider reports as billable;
- ``registry``: every cluster of this user in SQLite, shared by all processes; ``owner``:
  who holds a row (a process, by more than its PID); ``names``: readable cluster names;
- ``watched``: what watching code needs of a cluster; ``guards``: budget, idle and lease as
  pure policy; ``watchdog``: that policy applied in the owning kernel; ``reaper``: the one
  cross-process sweep (``cumulo reap``, the Jupyter server's timer); ``inventory``: list and
  stop clusters from any process.
"""
