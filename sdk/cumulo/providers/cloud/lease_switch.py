"""Runs in a cloud head's scheduler (a dask ``--preload``): stop the scheduler when no client is heard from.

Not imported by cumulo: its source is written to the head by the first-boot
script (:func:`cumulo.providers.cloud.bootstrap.user_data`), where only dask and
distributed are installed. With the scheduler gone, the head powers itself off
(the bootstrap's power-off) and its workers follow after their death timeout:
the half of the dead-man's switch that covers a kernel that went away (a laptop
asleep, a SIGKILLed kernel) while its cluster was busy; the scheduler's own
``--idle-timeout`` covers an idle one.

"Heard from": a dask client heartbeats its scheduler every few seconds while its
process runs; the switch takes the newest heartbeat of any client. The lease is
``CUMULO_CLIENT_LEASE`` seconds, counted from the scheduler's start plus
``CUMULO_CLIENT_LEASE_START`` (the launch may take that long to attach). The
notebook sets the scheduler metadata ``cumulo-lease`` when it attaches (its own
lease in seconds) and to ``"detached"`` when it disconnects on purpose
(``cluster.disconnect()``): a detached cluster is left to its budget, idle
timeout and the reapers, never to this switch.
"""

import asyncio
import logging
import os
import time

logger = logging.getLogger("cumulo.lease")


def dask_setup(scheduler) -> None:  # noqa: ANN001 - dask's preload hook
    from tornado.ioloop import PeriodicCallback

    lease = float(os.environ.get("CUMULO_CLIENT_LEASE") or 0)
    if lease <= 0:
        return
    heard = {"at": time.time() + float(os.environ.get("CUMULO_CLIENT_LEASE_START") or 0)}

    def check() -> None:
        now = time.time()
        setting = scheduler.get_metadata(keys=["cumulo-lease"], default=lease)
        if setting == "detached":
            heard["at"] = now
            return
        limit = float(setting) if isinstance(setting, (int, float)) and setting > 0 else lease
        for client in scheduler.clients.values():
            if client.client_key != "fire-and-forget":
                heard["at"] = max(heard["at"], client.last_seen)
        if now - heard["at"] > limit:
            logger.warning("cumulo: no client heard from for %.0f s (lease %.0f s): stopping the scheduler, and "
                           "with it this cluster", now - heard["at"], limit)
            callback.stop()
            asyncio.ensure_future(scheduler.close(reason="cumulo: no client heard from for the lease"))

    callback = PeriodicCallback(check, min(5.0, max(lease / 4, 0.2)) * 1000)
    scheduler.periodic_callbacks["cumulo-lease"] = callback  # started with the scheduler's own callbacks
    logger.info("cumulo: the scheduler stops when no client is heard from for %.0f s", lease)
