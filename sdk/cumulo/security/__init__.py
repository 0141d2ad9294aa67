"""Who may talk to a cluster, and what never leaves this machine.

- ``tlscerts``: a CA and certificates per cluster; ``local_security``: TLS for local clusters
  and the variables local workers never see; ``_local_worker``: the worker preload that removes
  them (loaded by file path); ``credentials``: where provider secrets are found, never stored.
"""
