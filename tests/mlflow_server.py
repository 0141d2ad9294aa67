"""A real MLflow tracking server for the tests: ``mlflow server`` with a SQLite store, artifacts in a temp
folder, on 127.0.0.1 (the `test` extra installs the full ``mlflow``).

It runs in a session of its own so that :meth:`TrackingServer.stop` ends it and every process it
started; :meth:`TrackingServer.start` starts it again on the same port and store (an outage and the
server's return, as a user would see them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import free_port

MLFLOW = Path(sys.executable).parent / "mlflow"


class TrackingServer:
    """``mlflow server`` on loopback; ``uri`` is what a notebook gives ``mlflow.set_tracking_uri``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 90.0) -> None:
        """Start the server (same port, same store) and wait until it answers /health."""
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=self.root)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout:.0f}s: "
                           f"{(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop the server and every process it started; the port answers nothing afterwards."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        deadline = time.monotonic() + 20  # its workers go with the group; wait until the port is free
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.uri}/health", timeout=0.5)
            except httpx.TransportError:
                break
            time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of the group still there
        except ProcessLookupError:
            pass
        self.proc = None

    def client(self):  # type: ignore[no-untyped-def]
        """An MlflowClient of this server, for the test's own checks."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)
