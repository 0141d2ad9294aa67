"""Public addresses for emulated cloud instances: a one-to-one NAT on loopback, for tests.

A cloud instance has a private address, which its own processes listen on and
the other instances of its network reach, and a public one, which the
notebook reaches: the cloud translates the public address to the private one.
Here both are loopback addresses (Linux routes all of 127/8 to lo); an
instance's processes bind only its private address (CUMULO_BIND_HOST), and
:class:`Nat` serves the public address: every TCP port that is listening on
the private address is listened on, with the same number, at the public
address, and each connection to it is relayed to the private one. So a client
that dials the public address reaches the instance, and a test can see which
address each side dialled.

The relay behaves like a network path, not like a proxy that always answers:

- it connects to the private address *first*, and only then relays; when that
  connection is refused (the process is gone, or not listening yet), the
  accepted connection is closed with SO_LINGER 0, so the client sees a reset,
  as a dial of a closed port does, never a connection that answers nothing;
- a port stops being listened on at the public address soon after (one poll,
  ``interval``) it stops at the private one, so dials are then refused;
- an end of stream from either side is passed on as a half close (FIN), and
  a reset as a reset (SO_LINGER 0);
- :meth:`Nat.remove` (the instance terminated) closes the public address's
  listeners at once.

Which ports listen where is read from ``/proc/net/tcp`` (Linux), polled every
``interval`` seconds while any address is mapped. Firewalls are not applied:
every port listening on the private address is served.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Nat", "listening"]

log = logging.getLogger(__name__)

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def listening(addresses: set[str]) -> dict[str, set[int]]:
    """The TCP ports listening on each of ``addresses`` (IPv4), from /proc/net/tcp: address -> ports."""
    found: dict[str, set[int]] = {a: set() for a in addresses}
    try:
        with open("/proc/net/tcp") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) < 4 or cols[3] != _LISTEN:
                    continue
                ip_hex, _, port_hex = cols[1].partition(":")
                ip = socket.inet_ntoa(struct.pack("<I", int(ip_hex, 16)))
                if ip in found:
                    found[ip].add(int(port_hex, 16))
    except OSError:
        pass
    return found


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST), as a refused or broken connection ends."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Mapping:
    public: str
    private: str
    #: port -> the listening socket at the public address
    listeners: dict[int, socket.socket] = field(default_factory=dict)
    #: connections accepted at the public address, per port (tests read it: who dialled the public address)
    accepted: dict[int, int] = field(default_factory=dict)


class Nat:
    """Public -> private address translation for emulated instances (see the module docstring).

    ``add(public, private)`` maps an address, ``remove(public)`` unmaps it and closes its listeners,
    ``close()`` stops everything. ``relay_ends()`` are the local ends of the relays' connections to
    private addresses (this process's sockets that are the NAT's, not a client's)."""

    def __init__(self, *, interval: float = 0.05) -> None:
        self.interval = interval
        self._maps: dict[str, _Mapping] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._relays: set[socket.socket] = set()
        self._ends: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="nat")
        self._thread.start()

    # -- what the emulator and tests call ----------------------------------------------------

    def add(self, public: str, private: str) -> None:
        """Serve ``public``: whatever listens on ``private`` becomes reachable there (from the next poll)."""
        with self._lock:
            self._maps[public] = _Mapping(public, private)

    def remove(self, public: str) -> None:
        """Stop serving ``public`` (the instance is gone): its listeners close now, so dials are refused."""
        with self._lock:
            mapping = self._maps.pop(public, None)
        if mapping is not None:
            self._close_listeners(mapping, set(mapping.listeners))

    def accepted(self, public: str) -> dict[int, int]:
        """Connections accepted so far at ``public``, per port."""
        with self._lock:
            mapping = self._maps.get(public)
            return dict(mapping.accepted) if mapping is not None else {}

    def relay_ends(self) -> set[tuple[str, int]]:
        """(address, port) of this process's sockets that the relays opened to private addresses."""
        with self._lock:
            return set(self._ends)

    def close(self) -> None:
        """Stop the poller, close every listener and reset every relayed connection."""
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            maps, self._maps = list(self._maps.values()), {}
            relays = list(self._relays)
        for mapping in maps:
            self._close_listeners(mapping, set(mapping.listeners))
        for sock in relays:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._selector.close()

    # -- the poller: one thread owns the listeners -------------------------------------------------

    def _loop(self) -> None:
        synced = 0.0
        while not self._stop.is_set():
            if time.monotonic() - synced >= self.interval:
                self._sync()
                synced = time.monotonic()
            if self._selector.get_map():
                for key, _ in self._selector.select(self.interval):
                    self._accept(key.fileobj, *key.data)  # type: ignore[arg-type]
            else:
                self._stop.wait(self.interval)

    def _sync(self) -> None:
        """Open a public listener for each port newly listening on a private address; close the others."""
        with self._lock:
            maps = list(self._maps.values())
        if not maps:
            return
        ports = listening({m.private for m in maps})
        for mapping in maps:
            wanted = ports.get(mapping.private, set())
            self._close_listeners(mapping, set(mapping.listeners) - wanted)
            for port in sorted(wanted - set(mapping.listeners)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((mapping.public, port))
                    sock.listen(64)
                except OSError as exc:  # taken (a wildcard listener on that port): tried again next poll
                    log.debug("nat: cannot listen on %s:%d: %s", mapping.public, port, exc)
                    sock.close()
                    continue
                sock.setblocking(False)
                with self._lock:
                    if self._maps.get(mapping.public) is not mapping:  # removed meanwhile
                        sock.close()
                        continue
                    mapping.listeners[port] = sock
                self._selector.register(sock, selectors.EVENT_READ, (mapping, port))

    def _close_listeners(self, mapping: _Mapping, ports: set[int]) -> None:
        for port in ports:
            with self._lock:
                sock = mapping.listeners.pop(port, None)
            if sock is None:
                continue
            with contextlib.suppress(KeyError, ValueError, RuntimeError):
                self._selector.unregister(sock)
            sock.close()

    def _accept(self, listener: socket.socket, mapping: _Mapping, port: int) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed meanwhile, or nothing to accept after all
            return
        with self._lock:
            mapping.accepted[port] = mapping.accepted.get(port, 0) + 1
        conn.setblocking(True)
        threading.Thread(target=self._relay, args=(conn, (mapping.private, port)), daemon=True,
                         name=f"nat-relay-{mapping.public}:{port}").start()

    # -- one relayed connection ------------------------------------------------------------------

    def _relay(self, conn: socket.socket, backend: tuple[str, int]) -> None:
        """Dial the private address first; refused: reset the accepted connection. Then pump both ways."""
        try:
            inner = socket.create_connection(backend, timeout=5.0)
        except OSError:
            _reset(conn)
            return
        inner.settimeout(None)
        for sock in (conn, inner):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = inner.getsockname()[:2]
        with self._lock:
            self._relays.update((conn, inner))
            self._ends.add(end)
        broken = threading.Event()
        back = threading.Thread(target=_pump, args=(inner, conn, broken), daemon=True)
        back.start()
        _pump(conn, inner, broken)
        back.join()
        with self._lock:
            self._relays.difference_update((conn, inner))
            self._ends.discard(end)
        for sock in (conn, inner):
            if broken.is_set():
                _reset(sock)
            else:
                sock.close()


def _pump(src: socket.socket, dst: socket.socket, broken: threading.Event) -> None:
    """Copy src to dst until src ends: an end of stream goes on as a half close, an error as a reset of both."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
    except OSError:
        broken.set()
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
