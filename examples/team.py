"""Team clusters from a script: your own hosts over SSH, a team's dask-gateway.

    python examples/team.py --ssh ssh://me@gpu1,gpu2
    python examples/team.py --gateway gateway+https://dask.example.org

Each runs the same small dataframe job on the cluster it attaches to, then closes it (every process
on the hosts, or the gateway's cluster, is stopped and confirmed gone). With neither option it
explains and exits. SSH needs the hosts' keys in ~/.ssh/known_hosts and a key cumulo can log in
with; the gateway needs dask-gateway's own auth config (gateway.auth.*). The notebook
notebooks/team.ipynb walks through the same steps; docs/ssh.md and docs/gateway.md explain them.
"""

from __future__ import annotations

import argparse

import dask.dataframe as dd
import pandas as pd

import cumulo


def mean_fare_by_zone() -> dict:
    """Mean fare per zone of a small synthetic frame, computed on the attached cluster."""
    fares = pd.DataFrame({"zone": [i % 7 for i in range(20_000)], "fare": [2.5 + i % 50 for i in range(20_000)]})
    return dd.from_pandas(fares, npartitions=4).groupby("zone").fare.mean().compute().round(2).to_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssh", metavar="TARGET", help="hosts you can ssh to, e.g. ssh://me@gpu1,gpu2")
    parser.add_argument("--gateway", metavar="ADDRESS", help="a dask-gateway, e.g. gateway+https://dask.example.org")
    args = parser.parse_args()
    if not (args.ssh or args.gateway):
        print("nothing to run: pass --ssh ssh://me@gpu1,gpu2 (hosts you can ssh to) and/or --gateway "
              "gateway+https://dask.example.org (your team's dask-gateway)")
        return 0
    if args.ssh:
        with cumulo.connect(args.ssh, name="team-ssh") as hosts:
            print("workers run:", sorted(set(hosts.client.run(lambda: __import__("sys").executable).values())))
            print("ssh: mean fare by zone:", mean_fare_by_zone())
        print("team-ssh:", cumulo.life.registry.Registry().latest("team-ssh").state)
    if args.gateway:
        options = cumulo.gateway_options(args.gateway)
        print("the gateway offers:", dict(options))
        with cumulo.connect(args.gateway, name="team-gateway", workers=1, options=dict(options)):
            print("gateway: mean fare by zone:", mean_fare_by_zone())
        print("team-gateway:", cumulo.life.registry.Registry().latest("team-gateway").state)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
