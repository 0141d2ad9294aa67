"""A provider that fails on demand, to drive the lifecycle through its fault paths.

Nothing runs: a "launch" records one billable resource (a ``thing``) through the
checkpoint, as a cloud provider records an instance before it bills. Behaviour is
chosen per cluster by its spec's options, and by files (so that another process,
such as a `cumulo down` subprocess, sees the same switches):

  fail_launch: raise after recording the resource (a half launch);
  refuse: raise in preflight (nothing started);
  stop_fails_while: a path; stop() raises while that file exists (a provider API that is down).

Stopped things are written to ``stopped_log`` (a path) so tests can assert what was stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

from cumulo.exceptions import ProviderError, SpecError, TerminateError
from cumulo.life.checkpoint import Checkpoint
from cumulo.providers import Deployment, Orphan, Provider, register_provider
from cumulo.life.registry import ClusterRecord, Registry
from cumulo.spec import ClusterSpec

NAME = "faulty-test"
#: Orphans the sweep reports (set by a test).
ORPHANS: list[Orphan] = []


class FaultyProvider(Provider):
    name = NAME
    bills_independently = True
    sweeps_orphans = True

    async def preflight(self, spec: ClusterSpec) -> None:
        if spec.options.get("refuse"):
            raise SpecError("refused before anything started (test)")

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        checkpoint.resource("thing", f"thing-{cluster_id}", state="billing")
        if spec.options.get("fail_launch"):
            try:
                await self.stop(_Row(cluster_id, spec), checkpoint)
            except TerminateError as cleanup:
                raise TerminateError(f"the launch failed and so did its cleanup ({cleanup}): it may still bill") \
                    from cleanup
            raise ProviderError("the launch failed half way (test)")
        raise ProviderError("this test provider only fails")

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        options = record.spec.get("options", {})
        blocker = options.get("stop_fails_while")
        if blocker and Path(blocker).exists():
            raise TerminateError("the provider's API is down (test): the thing may still bill")
        for r in checkpoint.resources("thing"):
            checkpoint.resource_state(r.resource_id, "terminated")
            log = options.get("stopped_log")
            if log:
                with open(log, "a") as f:
                    f.write(f"{r.resource_id} {os.getpid()}\n")

    async def sweep_orphans(self, registry: Registry, *, dry_run: bool = True,
                            terminate_unknown: bool = False) -> list[Orphan]:
        return list(ORPHANS)


class _Row:
    """Just enough of a ClusterRecord for stop() during a failed launch."""

    def __init__(self, cluster_id: str, spec: ClusterSpec) -> None:
        self.id = cluster_id
        self.spec = spec.to_dict()


def register() -> None:
    register_provider(NAME, "tests.faulty_provider:FaultyProvider")
