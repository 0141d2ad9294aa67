"""A worker plugin that installs the client's local wheels into the worker's own environment.

Sent by value (cloudpickle), so it imports only the standard library and
distributed: the workers it runs on have no cumulo yet; installing cumulo is
often its job. The wheels travel inside the plugin, over the cluster's own
authenticated TLS link, never through a public URL. Registered plugins also
reach workers that join later (scale-up, a replaced instance).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["InstallWheels"]


class InstallWheels(WorkerPlugin):
    """``pip install --no-deps --no-index`` these wheels into sys.prefix, once per digest per environment."""

    name = "cumulo-local-wheels"
    idempotent = True

    def __init__(self, wheels: dict[str, bytes], digest: str) -> None:
        self.wheels = wheels
        self.digest = digest

    def setup(self, worker: Any) -> None:
        marker = os.path.join(sys.prefix, ".cumulo-local")
        # several workers can share one environment (one instance, many GPUs): one installs, the others wait
        with open(os.path.join(sys.prefix, ".cumulo-local.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(marker) as f:
                    if f.read().strip() == self.digest:
                        return
            except OSError:
                pass
            with tempfile.TemporaryDirectory(prefix="cumulo-wheels-") as tmp:
                paths = []
                for name, data in sorted(self.wheels.items()):
                    path = os.path.join(tmp, os.path.basename(name))
                    with open(path, "wb") as f:
                        f.write(data)
                    paths.append(path)
                done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                       "--force-reinstall", *paths], capture_output=True, text=True)
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                    raise RuntimeError("cumulo: installing the client's local packages failed: " + " | ".join(tail))
            with open(marker, "w") as f:
                f.write(self.digest)
