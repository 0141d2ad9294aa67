"""A TLS connection that a local cluster's process accepts keeps the server's own context.

tornado builds each accepted stream without ``ssl_options`` and so makes its default
*client* context, loading the system's CA store (some 20 ms of CPU per process) for a
socket that already speaks TLS. cumulo's local processes hand the stream the socket's
context instead (``cumulo.security._local_worker.accepted_tls_keeps_its_context``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from cumulo.security.tlscerts import create_cluster_tls

_SERVER = textwrap.dedent(
    """
    import asyncio, json, socket, ssl, sys
    from tornado import netutil
    from tornado.tcpserver import TCPServer
    sys.path.insert(0, {sdk!r})
    from cumulo.security._local_worker import accepted_tls_keeps_its_context

    patched = accepted_tls_keeps_its_context() if {patch!r} else False
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile={ca!r})
    server_ctx.load_cert_chain({cert!r}, {key!r})
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile={ca!r})
    client_ctx.check_hostname = False
    client_ctx.load_cert_chain({cert!r}, {key!r})
    seen = {{}}

    class Echo(TCPServer):
        async def handle_stream(self, stream, address):
            seen["server_context"] = stream._ssl_options is server_ctx
            data = await stream.read_until(b"\\n")
            await stream.write(data)
            stream.close()

    async def main():
        server = Echo(ssl_options=server_ctx)
        sock, = netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets([sock])
        port = sock.getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        writer.write(b"hello\\n"); await writer.drain()
        echoed = await reader.readline()
        writer.close()
        server.stop()
        print(json.dumps({{"patched": patched, "echo": echoed.decode(), **seen,
                          "ca_store_loaded": netutil._client_ssl_defaults.cache_info().currsize}}))

    asyncio.run(main())
    """
)


def _serve(tmp_path: Path, *, patch: bool) -> dict[str, object]:
    tls = create_cluster_tls("accept-test", directory=tmp_path)
    sdk = str(Path(__file__).resolve().parents[1] / "sdk")
    code = _SERVER.format(sdk=sdk, patch=patch, ca=str(tls.ca_file), cert=str(tls.cert_file("scheduler")),
                          key=str(tls.key_file("scheduler")))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_accepted_tls_stream_uses_the_servers_context(tmp_path: Path) -> None:
    got = _serve(tmp_path, patch=True)
    assert got == {"patched": True, "echo": "hello\n", "server_context": True, "ca_store_loaded": 0}


def test_without_it_tornado_loads_the_ca_store_for_each_process(tmp_path: Path) -> None:
    got = _serve(tmp_path, patch=False)  # what the test above guards against: tornado's own behaviour
    assert got["echo"] == "hello\n" and got["server_context"] is False and got["ca_store_loaded"] == 1
