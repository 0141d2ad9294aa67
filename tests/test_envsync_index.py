"""What the preflight says about the package index, against real indexes on loopback and the real uv.

A package the index lacks is named as missing; an index that does not answer (nothing listening, or a
server error) is named as unreachable, and no package is blamed for it, although uv's error quotes a URL
that names one. Credentials in the index URL never reach the message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cumulo import envsync
from cumulo.exceptions import EnvironmentSyncError

from .conftest import free_port

MISSING = "cumulo-no-such-package-zz"


class _Index(BaseHTTPRequestHandler):
    """A simple-API index (PEP 503) that holds no package, or answers every request with ``status``."""

    status = 404

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b"<html><body></body></html>" if self.status == 200 else b"no"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Index]]:
    """A loopback index that uv uses for this test (no retries, no cache of another index)."""
    handler = type("Index", (_Index,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="test-index", daemon=True)
    thread.start()
    monkeypatch.setenv("UV_INDEX_URL", f"http://reader:s3cret-token@127.0.0.1:{server.server_port}/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    handler.port = server.server_port  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _refusal() -> str:
    lock = envsync.Lock(python="3.11", pins=[f"{MISSING}==1.0"])
    with pytest.raises(EnvironmentSyncError) as info:
        envsync.check_resolvable(lock)
    return str(info.value)


def test_a_package_the_index_lacks_is_named_as_missing(index: type[_Index]) -> None:
    text = _refusal()
    assert text.startswith(f"package '{MISSING}' is not on the package index"), text
    assert "could not be reached" not in text and "s3cret-token" not in text, text


@pytest.mark.parametrize("status", [503, 500])
def test_an_index_that_fails_is_unreachable_not_a_missing_package(index: type[_Index], status: int) -> None:
    index.status = status
    text = _refusal()
    port = index.port  # type: ignore[attr-defined]
    assert text.startswith(f"the package index http://127.0.0.1:{port} could not be reached"), text
    assert f"package '{MISSING}'" not in text and "is not on the package index" not in text, text
    assert "s3cret-token" not in text


def test_an_index_nobody_listens_on_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("UV_INDEX_URL", f"http://reader:s3cret-token@127.0.0.1:{port}/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    text = _refusal()
    assert text.startswith(f"the package index http://127.0.0.1:{port} could not be reached"), text
    assert "UV_INDEX_URL" in text and "cumulo.env.find-links" in text  # what to do next
    assert f"package '{MISSING}'" not in text and "s3cret-token" not in text, text
