"""What a cluster costs and what it did: prices, the spend meter, and the cost of each cell.

- ``catalog``: GPU offers and prices (bundled rows with their source and date, live fetchers);
- ``metering``: ``cluster.usage``: spend = billing clock x price, always labelled, with the
  usage ledger (``cumulo._ledger``, a scheduler plugin) and GPU energy (``cumulo._energy``);
- ``cellcost``: the per-cell cost line in notebooks; ``cellhistory``: cells as the registry keeps them;
- ``carbon``: grams of CO2 from measured GPU energy and the grid intensity of the cluster's region;
- ``listeners``: trackers (cumulo.mlops) told at attach, after each cell, at close and around training.
"""
