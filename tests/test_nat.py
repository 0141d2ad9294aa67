"""The emulators' public addresses (tests/nat.py) behave like a network path: a relay that dials the private
address first, a reset where that is refused, a refusal once nothing listens, and nothing left at removal."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from .nat import Nat, listening

pytestmark = pytest.mark.timeout(60)


def _pair() -> tuple[str, str]:
    second, third = random.randint(100, 249), random.randint(0, 250)
    return f"127.{second + 1}.{third}.7", f"127.{second}.{third}.7"


class _Upper:
    """A backend on a private address that answers each connection's bytes in upper case, until EOF."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data.upper())

    def stop(self) -> None:
        """Stop listening (shutdown wakes the accept; a plain close would leave it listening)."""
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def nat() -> Iterator[Nat]:
    n = Nat(interval=0.02)
    yield n
    n.close()


def _dial(host: str, port: int, deadline: float = 5.0) -> socket.socket:
    """Dial until the NAT serves the port (it follows the private listener within a poll)."""
    end = time.monotonic() + deadline
    while True:
        try:
            return socket.create_connection((host, port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            time.sleep(0.01)


def test_a_connection_to_the_public_address_reaches_the_private_one_both_ways(nat: Nat) -> None:
    public, private = _pair()
    backend = _Upper(private)
    try:
        nat.add(public, private)
        with _dial(public, backend.port) as conn:
            conn.sendall(b"hello")
            assert conn.recv(1024) == b"HELLO"
            conn.shutdown(socket.SHUT_WR)  # a half close goes on as one: the backend ends, so does the answer
            assert conn.recv(1024) == b""
        assert nat.accepted(public) == {backend.port: 1}
        assert listening({private})[private] == {backend.port}
    finally:
        backend.stop()


def test_a_dial_where_nothing_listens_any_more_is_reset_then_refused_never_left_hanging(nat: Nat) -> None:
    public, private = _pair()
    backend = _Upper(private)
    nat.add(public, private)
    _dial(public, backend.port).close()
    backend.stop()
    # until the next poll the public port still accepts: the relay's dial is refused, so the client sees a reset
    end = time.monotonic() + 5
    while True:
        try:
            conn = socket.create_connection((public, backend.port), timeout=5)
        except ConnectionRefusedError:
            break  # the public port closed with the private one
        except ConnectionResetError:  # the public listener closed with this dial in its backlog: a reset too
            assert time.monotonic() < end, "the public port is still listened on after the private one closed"
            continue
        with conn, pytest.raises((ConnectionResetError, BrokenPipeError)):
            conn.sendall(b"x")
            conn.recv(1024)  # a reset, never a timeout (socket.timeout would fail the test)
        assert time.monotonic() < end, "the public port is still listened on after the private one closed"


def test_removing_an_address_closes_its_listeners_at_once(nat: Nat) -> None:
    public, private = _pair()
    backend = _Upper(private)
    try:
        nat.add(public, private)
        _dial(public, backend.port).close()
        nat.remove(public)  # the instance terminated
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((public, backend.port), timeout=5)
    finally:
        backend.stop()
