"""Runs on a cloud instance: wait for the cloud's notice that it takes the instance back, then leave cleanly.

Not imported by cumulo: its source, after the cloud's own ``notice()`` and
``instance_id()`` functions (e.g. :mod:`cumulo.providers.aws.notice`), is
embedded in the first-boot script (:func:`cumulo.providers.cloud.bootstrap.user_data`)
and run there with the instance's Python, which has distributed but not cumulo.

On notice it connects to the scheduler with the instance's own certificate,
logs a ``cumulo-interruption`` event (the instance, the deadline, its workers:
the notebook's watchdog stops that instance's billing from it, see
:mod:`cumulo.life.interruptions`) and retires this instance's workers through
dask's ``retire_workers``, so their data moves to the other workers before the
cloud's deadline. Then it exits; the instance powers off when its worker has
gone (the bootstrap's power-off).
"""

import sys
import time

TOPIC = "cumulo-interruption"


def _mine(info: dict, name: str) -> list:
    """This instance's workers: named ``name``, or ``name-N`` (dask-cuda: one worker per GPU)."""
    return [addr for addr, w in info["workers"].items()
            if str(w.get("name")) == name or str(w.get("name")).startswith(name + "-")]


def watch(scheduler: str, tls_dir: str, role: str, name: str, poll: float) -> None:
    """Poll the notice every ``poll`` seconds; on notice, report and retire this instance's workers."""
    iid = None
    while iid is None:
        try:
            iid = instance_id()  # noqa: F821 - defined by the cloud's part of the embedded script
        except OSError:
            time.sleep(poll)
    while True:
        try:
            notice_ = notice()  # noqa: F821 - defined by the cloud's part of the embedded script
        except OSError:
            notice_ = None
        if notice_:
            break
        time.sleep(poll)
    print(f"cumulo: interruption notice for {iid}: {notice_}", flush=True)
    from distributed import Client
    from distributed.security import Security

    security = Security(tls_ca_file=f"{tls_dir}/ca.pem", tls_client_cert=f"{tls_dir}/{role}.pem",
                        tls_client_key=f"{tls_dir}/{role}-key.pem", require_encryption=True)
    with Client(scheduler, security=security, timeout=30, set_as_default=False) as client:
        workers = _mine(client.scheduler_info(n_workers=-1), name)
        client.log_event(TOPIC, {"instance": iid, "action": notice_.get("action"), "at": notice_.get("at"),
                                 "notice_at": time.time(), "name": name, "workers": workers})
        print(f"cumulo: retiring {workers} before {notice_.get('at')}", flush=True)
        client.retire_workers(workers=workers, close_workers=True)


if __name__ == "__main__":
    watch(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
