"""Toy Cloud for cumulo: a pretend cloud whose "instances" are Dask processes on this machine.

It exists to show (and test) that a provider can live in a package of its own: cumulo finds
it through the ``cumulo.providers`` entry point (see ../pyproject.toml), and everything generic
code needs from it is declared on the class (provider.py): its config section ``cumulo.toy.*``
(config.yaml), its credential ``TOYCLOUD_LOGIN``, its prices (prices.csv and a live source) and
its orphan sweep.
"""
