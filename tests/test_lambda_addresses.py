"""Each side of a Lambda cluster dials its own address of the head: the notebook its public ``ip``, the other
instances its ``private_ip`` (lambda_spec.INSTANCE_ADDRESSES).

The emulator gives each instance two loopback addresses, its processes listen
only on the private one, and a NAT (tests/nat.py) serves the public one. What
each side dialled is read from the operating system's sockets, not from what
cumulo says of itself: this process's connections to the instances, and the
connections of the instances' own processes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from urllib.parse import urlsplit

import cumulo
import dask.dataframe as dd
import pandas as pd
import psutil
import pytest

from . import lambda_spec
from .lambda_emulator import Emulator
from .lambda_support import emulator, no_orphans  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(180)


def _remote_ips(pids: set[int], addresses: set[str], *, skip: Collection[tuple[str, int]] = ()) -> set[str]:
    """Remote addresses among ``addresses`` of the TCP connections that ``pids`` hold (their local ends in
    ``skip`` left out)."""
    found = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections("tcp4")
        except psutil.Error:
            continue
        for c in conns:
            if c.raddr and c.raddr.ip in addresses and (c.laddr.ip, c.laddr.port) not in skip:
                found.add(c.raddr.ip)
    return found


def _instance_pids(emulator: Emulator) -> set[int]:
    groups = set(emulator.running_process_groups())
    pids = set()
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) in groups:
                pids.add(p.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return pids


def test_the_notebook_dials_the_public_address_and_the_instances_the_private_ones(emulator: Emulator) -> None:
    assert set(lambda_spec.INSTANCE_ADDRESSES) == {"ip", "private_ip"}
    with cumulo.connect("lambda", name="two-nets", gpu="A10", workers=3) as cluster:
        client = cluster.client
        df = dd.from_pandas(pd.DataFrame({"k": [1, 2] * 100, "v": range(200)}), npartitions=6)
        assert df.groupby("k").v.sum().compute().to_dict() == {1: 9900, 2: 10000}
        instances = emulator.live()
        assert len(instances) == 3 and all(i.ip and i.private_ip and i.ip != i.private_ip for i in instances)
        publics, privates = {i.ip for i in instances}, {i.private_ip for i in instances}
        scheduler = urlsplit(client.scheduler.address)
        head = next(i for i in instances if i.ip == scheduler.hostname)  # the notebook: the head's public ip
        assert emulator.nat is not None and emulator.nat.accepted(head.ip).get(scheduler.port, 0) >= 1
        # the workers: the head's private address, and they listen on their own private addresses
        dialled = client.run(lambda dask_worker: dask_worker.scheduler.address)
        assert set(dialled.values()) == {f"tls://{head.private_ip}:{scheduler.port}"}
        assert {urlsplit(w).hostname for w in client.scheduler_info()["workers"]} == privates
        # what the sockets say: this process holds connections to public addresses only (the NAT's own relays
        # to private ones aside), the instances' processes to private addresses only, the head's among them
        mine = _remote_ips({os.getpid()}, publics | privates, skip=emulator.nat.relay_ends())
        assert mine == {head.ip}
        theirs = _remote_ips(_instance_pids(emulator), publics | privates)
        assert head.private_ip in theirs and theirs <= privates
    assert emulator.wait_idle()
    # the head's public address went with it: a dial is refused, as at a released address
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((head.ip, scheduler.port), timeout=5).close()
