"""The kernel a notebook runs in: which one, code run in it, and closing it (teardown steps 1 and 2).

The kernel closes every cluster it started (``cumulo.cluster``'s at-exit closer, run as a
last piece of code after interrupting whatever still runs), then it is shut down,
gracefully and then killed. nbformat, nbclient and jupyter_client are imported where
they are used: they are part of cumulo's core install, and an environment that lost one
gets a MissingDependency naming the pip line (:func:`require_notebook_packages`), not an
ImportError on ``import cumulo.run``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import time
from typing import Any

from ..exceptions import MissingDependency

#: How long the kernel gets to close its clusters (a cloud cluster waits for confirmed termination).
TEARDOWN_TIMEOUT = 600.0
#: What ``cumulo run`` imports to read and execute a notebook (cumulo's core install brings them).
_NOTEBOOK_PACKAGES = ("nbformat", "nbclient")

_TEARDOWN = """\
import sys as _cumulo_sys
if "cumulo.cluster" in _cumulo_sys.modules:
    _cumulo_sys.modules["cumulo.cluster"].close_all()
"""


def choose_kernel(nb: Any, wanted: str | None) -> str:
    """The kernel to run in: ``wanted``, else the notebook's, else python3 (MissingDependency without one)."""
    if wanted:
        return wanted
    name = (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    try:
        from jupyter_client.kernelspec import KernelSpecManager  # core install; a broken one: python3

        installed = KernelSpecManager().find_kernel_specs()
    except Exception:
        return "python3"
    if name in installed:
        return name
    if "python3" not in installed:
        raise MissingDependency(
            f"no Jupyter kernel to run {'kernel ' + repr(name) + ' or ' if name != 'python3' else ''}python3 in: "
            "pip install ipykernel (part of cumulo's install), or name an installed kernel with --kernel "
            "(see `jupyter kernelspec list`)")
    print(f"cumulo run: kernel {name!r} is not installed here; using python3", file=sys.stderr)
    return "python3"


def require_notebook_packages() -> None:
    """Raise MissingDependency, naming the pip line, when a package ``cumulo run`` imports is missing.

    They are part of cumulo's core install; an environment that lost one (or was installed
    without dependencies) gets this instead of a ModuleNotFoundError from deep inside a run.
    """
    missing = []
    for module in _NOTEBOOK_PACKAGES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingDependency(
            f"{' and '.join(missing)} cannot be imported in this environment ({sys.executable}): "
            f"pip install {' '.join(missing)} ipykernel "
            "(cumulo's own install brings them: pip install --upgrade cumulo)")


async def execute_in(kc: Any, code: str, timeout: float) -> bool:
    """Run ``code`` in the kernel on a client of our own; whether it finished within ``timeout``."""
    msg_id = kc.execute(code, store_history=False, allow_stdin=False, silent=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = await kc.get_shell_msg(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
        except Exception:  # queue.Empty: nothing yet
            continue
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return True
    return False


async def close_kernel(client: Any, pid: int | None, *, interrupt: bool) -> None:
    """Teardown steps 1 and 2 (see cumulo.run): the kernel closes its clusters, then it is shut down."""
    km = client.km
    if km is None:
        return
    try:
        alive = await km.is_alive()
    except Exception:
        alive = False
    if alive:
        if interrupt:
            if pid:  # stop the cell still running (only the kernel: SIGINT to its group would hit its workers)
                try:
                    os.kill(pid, signal.SIGINT)
                except OSError:
                    pass
                await asyncio.sleep(0.5)
        kc = km.client()
        try:
            kc.start_channels()
            await kc.wait_for_ready(timeout=30)
            if not await execute_in(kc, _TEARDOWN, TEARDOWN_TIMEOUT):
                print("cumulo run: the kernel did not close its clusters in time; stopping them from here",
                      file=sys.stderr)
        except Exception as exc:
            print(f"cumulo run: could not ask the kernel to close its clusters ({type(exc).__name__}); "
                  "stopping them from here", file=sys.stderr)
        finally:
            kc.stop_channels()
    if client.kc is not None:
        try:
            client.kc.stop_channels()
        except Exception:
            pass
    try:
        km.shutdown_wait_time = 5.0  # it has closed its clusters already: a short grace, then SIGTERM
        await km.shutdown_kernel(now=not alive)
    except Exception:
        try:
            await km.shutdown_kernel(now=True)
        except Exception:
            pass
    finally:
        try:
            await km.cleanup_resources()
        except Exception:
            pass
