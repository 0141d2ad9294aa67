"""A loopback stand-in for Azure's Instance Metadata Service: each VM's name, and Scheduled Events (Preempt).

On Azure every VM reaches its own metadata service at 169.254.169.254, which
answers about the VM that asks. Here one server answers every emulated VM (the
address is ``cumulo.azure.metadata-endpoint``, which cumulo writes into each
VM's first-boot script) and tells them apart as the real one does, by who
connects: the process that owns the connecting socket (psutil), whose process
group is one emulated VM's (``who``, given by the ARM emulator). What it copies
from Microsoft's documentation:

- every request needs the header ``Metadata: true``, else 400 with
  ``{"error": "Bad request. Required metadata header not specified"}``; a
  request carrying ``X-Forwarded-For`` (through a proxy) is refused the same way;
- ``GET /metadata/instance/compute/name?api-version=2021-02-01&format=text``
  answers the VM's name as text; an unknown api-version answers 400;
- ``GET /metadata/scheduledevents?api-version=2020-07-01`` answers
  ``{"DocumentIncarnation": n, "Events": [...]}``, n going up with each change;
  a Spot eviction (:meth:`MetadataEmulator.preempt`) is
  ``{"EventId", "EventType": "Preempt", "ResourceType": "VirtualMachine",
  "Resources": [<VM name>], "EventStatus": "Scheduled", "NotBefore": <RFC 1123
  date>, "Description", "EventSource": "Platform", "DurationInSeconds": -1}``,
  listed to every VM of the same "availability set" (here: every caller), as
  Azure lists events of the VM's neighbours too;
- anything else is 404.
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil

_BAD = {"error": "Bad request. Required metadata header not specified"}


def _owner_group(peer: tuple[str, int]) -> int | None:
    """The process group of the process that owns the client end of a loopback connection."""
    for conn in psutil.net_connections("tcp4"):
        if conn.laddr and (conn.laddr.ip, conn.laddr.port) == peer and conn.pid:
            try:
                return os.getpgid(conn.pid)
            except ProcessLookupError:
                return None
    return None


class MetadataEmulator:
    """The server; ``endpoint`` goes into ``cumulo.azure.metadata-endpoint``; ``preempt(name, at)`` evicts."""

    def __init__(self, who: Callable[[int], str | None]) -> None:
        #: process group -> the name of the VM it is (None: not a VM of the emulator)
        self.who = who
        self.events: list[dict[str, Any]] = []
        self.incarnation = 1
        #: (VM name or None, path) of every request, for tests to see who asked
        self.asked: list[tuple[str | None, str]] = []
        self._lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _answer(self, code: int, body: str = "", kind: str = "application/json") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if self.headers.get("Metadata") != "true" or self.headers.get("X-Forwarded-For"):
                    return self._answer(400, json.dumps(_BAD))
                pgid = _owner_group(self.client_address[:2])
                name = emulator.who(pgid) if pgid is not None else None
                with emulator._lock:
                    emulator.asked.append((name, url.path))
                if url.path == "/metadata/instance/compute/name":
                    if query.get("api-version") != "2021-02-01":
                        return self._answer(400, json.dumps({"error": "Bad request. api-version is invalid"}))
                    if name is None:
                        return self._answer(404, json.dumps({"error": "Not found"}))
                    return self._answer(200, name, "text/plain; charset=utf-8")
                if url.path == "/metadata/scheduledevents":
                    if query.get("api-version") != "2020-07-01":
                        return self._answer(400, json.dumps({"error": "Bad request. api-version is invalid"}))
                    with emulator._lock:
                        body = {"DocumentIncarnation": emulator.incarnation, "Events": list(emulator.events)}
                    return self._answer(200, json.dumps(body))
                return self._answer(404, json.dumps({"error": "Not found"}))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="azure-imds-emulator")

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MetadataEmulator:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def preempt(self, vm_name: str, at: float) -> None:
        """Schedule a Spot eviction of ``vm_name`` not before ``at`` (epoch seconds), as Azure posts it."""
        with self._lock:
            self.events.append({
                "EventId": str(uuid.uuid4()).upper(), "EventType": "Preempt", "ResourceType": "VirtualMachine",
                "Resources": [vm_name], "EventStatus": "Scheduled",
                "NotBefore": email.utils.formatdate(at, usegmt=True), "Description": "",
                "EventSource": "Platform", "DurationInSeconds": -1})
            self.incarnation += 1

    def done(self, vm_name: str) -> None:
        """The eviction happened: its event leaves the document."""
        with self._lock:
            self.events = [e for e in self.events if vm_name not in e["Resources"]]
            self.incarnation += 1
