"""Dashboard proxy benchmark: a cluster's Dask dashboard through the Jupyter server's route vs directly, on loopback.

One local cluster (1 worker) and one Jupyter server (``jupyter server`` with
cumulo's extension, a token, 127.0.0.1) run side by side; the client is this
process. Measured, alternating direct and proxied runs in every round so that
drift on the machine hits both alike:

(a) the status page: ``GET /status`` (Bokeh's HTML with a fresh session), one
    keep-alive connection;
(b) a JSON endpoint: ``GET /json/counts.json``, one keep-alive connection;
(c) websockets: opening Bokeh's ``/status/ws`` up to its ACK, and one round trip
    on an open socket (PULL-DOC-REQ, answered by the whole document: the
    message a page's first render waits for).

The report gives medians per request and proxied/direct ratios (median over
rounds of proxied run / direct run of the same round). Usage:

    python benchmarks/bench_dashboard.py [--rounds 7] [--requests 40] [--out benchmarks/results/dashboard.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(tmp: Path, token: str) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp / "config" / "jupyter_server_config.d"
    config.mkdir(parents=True)
    (config / "cumulo.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}))
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    cmd = [sys.executable, "-m", "jupyter", "server", "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}",
           "--ServerApp.log_level=WARN"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "wb"),
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "api/status", headers={"Authorization": f"token {token}"}, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"jupyter server did not start: {(tmp / 'server.log').read_text()[-2000:]}")


async def _timed(n: int, one: Callable[[], Awaitable[None]]) -> float:
    """Seconds per call of ``one`` over ``n`` calls (after one warm-up call)."""
    await one()
    started = time.perf_counter()
    for _ in range(n):
        await one()
    return (time.perf_counter() - started) / n


Results = dict[str, dict[str, list[float]]]  # what -> side ("direct", "proxied") -> seconds per request, per round
KINDS = ("status page", "json endpoint", "websocket open", "websocket round trip")


async def _measure(direct: str, proxied: str, token: str, rounds: int, requests: int) -> Results:
    import httpx
    import tornado.websocket
    from tornado.httpclient import HTTPRequest

    auth = {"Authorization": f"token {token}"}
    results: Results = {k: {"direct": [], "proxied": []} for k in KINDS}
    floor: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:

        def page(base: str, headers: dict[str, str]) -> Callable[[], Awaitable[None]]:
            async def one() -> None:
                r = await client.get(base + "status", headers=headers)
                assert r.status_code == 200 and b"bokeh" in r.content.lower(), r.status_code
            return one

        def counts(base: str, headers: dict[str, str]) -> Callable[[], Awaitable[None]]:
            async def one() -> None:
                r = await client.get(base + "json/counts.json", headers=headers)
                assert r.status_code == 200 and "workers" in r.json()
            return one

        async def socket_for(base: str, headers: dict[str, str]) -> Any:
            body = (await client.get(base + "status", headers=headers)).text
            session_token = re.search(r'"token":\s*"([^"]+)"', body)
            assert session_token, "no Bokeh session token in the status page"
            url = base.replace("http://", "ws://") + "status/ws"
            ws = await tornado.websocket.websocket_connect(HTTPRequest(url, headers=headers),
                                                           subprotocols=["bokeh", session_token.group(1)])
            ack = json.loads(await ws.read_message())
            assert ack["msgtype"] == "ACK", ack
            return ws

        def ws_open(base: str, headers: dict[str, str]) -> Callable[[], Awaitable[None]]:
            async def one() -> None:  # includes the page fetch that hands out the session token
                (await socket_for(base, headers)).close()
            return one

        async def ws_round_trip(base: str, headers: dict[str, str]) -> float:
            ws = await socket_for(base, headers)
            try:
                async def one() -> None:
                    msgid = secrets.token_hex(4)
                    for part in (json.dumps({"msgid": msgid, "msgtype": "PULL-DOC-REQ"}), "{}", "{}"):
                        await ws.write_message(part)
                    while True:  # the server also pushes PATCH-DOC updates: skip to our reply's header
                        frame = await ws.read_message()
                        assert frame is not None, "the websocket closed"
                        if isinstance(frame, str) and len(frame) < 1000 and '"PULL-DOC-REPLY"' in frame:
                            header = json.loads(frame)
                            if header.get("reqid") == msgid:
                                break
                    for _ in range(2 + int(header.get("num_buffers") or 0)):  # metadata, content, buffers
                        await ws.read_message()
                return await _timed(requests, one)
            finally:
                ws.close()

        async def server_status() -> None:  # the Jupyter server's own cheapest authenticated route, for scale
            r = await client.get(proxied.split("cumulo/")[0] + "api/status", headers=auth)
            assert r.status_code == 200

        sides = {"direct": (direct, {}), "proxied": (proxied, auth)}
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                base, headers = sides[side]
                results["status page"][side].append(await _timed(max(requests // 4, 5), page(base, headers)))
                results["json endpoint"][side].append(await _timed(requests, counts(base, headers)))
                results["websocket open"][side].append(await _timed(max(requests // 4, 5), ws_open(base, headers)))
                results["websocket round trip"][side].append(await ws_round_trip(base, headers))
            floor.append(await _timed(requests, server_status))
    results["server floor"] = {"direct": floor, "proxied": floor}
    return results


def _report(results: Results, command: str, rounds: int, requests: int) -> str:
    import dask
    import distributed
    import jupyter_server
    import jupyter_server_proxy

    lines = [
        "# cumulo dashboard proxy benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.platform()}; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, dask {dask.__version__}, distributed {distributed.__version__}, "
        f"jupyter_server {jupyter_server.__version__}, jupyter-server-proxy {jupyter_server_proxy.__version__}.",
        f"Command: `{command}`.",
        f"A local cluster (1 worker) and a Jupyter server with cumulo's extension on 127.0.0.1; {rounds} rounds, "
        "direct and proxied alternating in each; per-request times are medians over rounds of a round's mean "
        f"({requests} JSON requests and websocket round trips, {max(requests // 4, 5)} status pages and "
        "websocket opens per round). Ratio: median over rounds of (proxied / direct of the same round).",
        "",
        "| what | direct ms | proxied ms | ratio proxied/direct | aim |",
        "|---|---:|---:|---:|---|",
    ]
    floor = statistics.median(results.pop("server floor")["direct"])
    for what, sides in results.items():
        d, p = statistics.median(sides["direct"]), statistics.median(sides["proxied"])
        ratio = statistics.median(pp / dd for pp, dd in zip(sides["proxied"], sides["direct"]))
        lines.append(f"| {what} | {d * 1000:.2f} | {p * 1000:.2f} | **{ratio:.2f}** | "
                     f"{'met' if ratio <= 1.2 else 'missed'} (<= 1.2) |")
    lines += ["", "For scale: the Jupyter server's own `GET /api/status` with a token takes "
              f"{floor * 1000:.2f} ms here "
              "(login check and one small JSON reply, no forwarding): every proxied request pays at least that "
              "on top of the dashboard's own time."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dashboard.md"))
    args = parser.parse_args()
    command = "python benchmarks/bench_dashboard.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="cumulo-bench-dash-") as name:
        tmp = Path(name)
        os.environ["CUMULO_REGISTRY"] = str(tmp / "registry.db")  # the cluster's row, which the server reads
        import cumulo

        token = secrets.token_hex(16)
        with cumulo.connect(workers=1, threads_per_worker=1, name="bench-dash") as cluster:
            proc, url = _start_server(tmp, token)
            try:
                direct = cluster.direct_dashboard_link.rsplit("status", 1)[0]
                proxied = f"{url}cumulo/clusters/bench-dash/dashboard/"
                results = asyncio.run(_measure(direct, proxied, token, args.rounds, args.requests))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    report = _report(results, command.strip(), args.rounds, args.requests)
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
