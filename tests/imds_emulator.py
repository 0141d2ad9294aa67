"""A loopback stand-in for EC2's instance metadata service (IMDSv2), one path prefix per emulated instance.

On EC2 every instance reaches its own metadata service at 169.254.169.254; here all
instances share one server and each is told its own base address
(``http://127.0.0.1:PORT/<instance-id>/``) through botocore's setting
``AWS_EC2_METADATA_SERVICE_ENDPOINT``. What it copies from AWS's documentation:

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1-21600)
  answers a session token; without the header, 400. Every GET needs the token in
  ``X-aws-ec2-metadata-token``, else 401 (IMDSv2 "required" mode, as cumulo's
  launches set it).
- ``GET /latest/meta-data/instance-id`` answers the instance's id.
- ``GET /latest/meta-data/spot/instance-action`` answers 404 until the instance
  is marked for interruption, then ``{"action": "terminate", "time":
  "YYYY-MM-DDThh:mm:ssZ"}``.
- ``GET /latest/meta-data/iam/security-credentials/`` answers the name of the
  role of the instance's instance profile (404 without one), and
  ``.../security-credentials/<role>`` that role's temporary credentials
  (``Code``, ``AccessKeyId`` "ASIA...", ``SecretAccessKey``, ``Token``,
  ``Expiration``, as AWS's JSON has them): what boto3 on an instance reads.
- Anything else is 404.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImdsEmulator:
    """The server; ``base(iid)`` is an instance's endpoint, ``interrupt(iid, at)`` serves its notice."""

    def __init__(self, role_of: Callable[[str], str | None] = lambda iid: None) -> None:
        #: the role of an instance's instance profile (None: it has none)
        self.role_of = role_of
        #: instance id -> the credentials handed to it (what its processes sign with)
        self.issued: dict[str, dict[str, str]] = {}
        self.notices: dict[str, dict[str, str]] = {}
        self.tokens: dict[str, float] = {}
        #: (instance id, path) of every GET, for tests to see who asked
        self.asked: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _answer(self, code: int, body: str = "", kind: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _split(self) -> tuple[str, str]:
                _, iid, rest = (self.path.split("/", 2) + ["", ""])[:3]
                return iid, "/" + rest

            def do_PUT(self) -> None:  # noqa: N802 - http.server's name
                _, path = self._split()
                if path != "/latest/api/token":
                    return self._answer(404)
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return self._answer(400)
                token = secrets.token_urlsafe(24)
                with emulator._lock:
                    emulator.tokens[token] = time.time() + int(ttl)
                return self._answer(200, token)

            def do_GET(self) -> None:  # noqa: N802
                iid, path = self._split()
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                with emulator._lock:
                    valid = emulator.tokens.get(token, 0) > time.time()
                    emulator.asked.append((iid, path))
                    notice = emulator.notices.get(iid)
                if not valid:
                    return self._answer(401)
                if path == "/latest/meta-data/instance-id":
                    return self._answer(200, iid)
                if path == "/latest/meta-data/spot/instance-action" and notice is not None:
                    return self._answer(200, json.dumps(notice), "application/json")
                prefix = "/latest/meta-data/iam/security-credentials/"
                role = emulator.role_of(iid) if path.startswith(prefix) else None
                if role is not None and path == prefix:
                    return self._answer(200, role)
                if role is not None and path == prefix + role:
                    return self._answer(200, json.dumps(emulator._credentials(iid)), "application/json")
                return self._answer(404)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="imds-emulator")

    def start(self) -> ImdsEmulator:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def base(self, instance_id: str) -> str:
        """The metadata endpoint an instance is given (AWS_EC2_METADATA_SERVICE_ENDPOINT)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{instance_id}/"

    def _credentials(self, instance_id: str) -> dict[str, str]:
        with self._lock:
            if instance_id not in self.issued:
                now = time.time()
                self.issued[instance_id] = {
                    "Code": "Success", "Type": "AWS-HMAC",
                    "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                    "AccessKeyId": "ASIA" + secrets.token_hex(8).upper(),
                    "SecretAccessKey": secrets.token_urlsafe(30), "Token": secrets.token_urlsafe(60),
                    "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 6 * 3600))}
            return dict(self.issued[instance_id])

    def interrupt(self, instance_id: str, at: float, action: str = "terminate") -> None:
        """Serve the instance a spot interruption notice: AWS takes it back at ``at`` (epoch seconds)."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        with self._lock:
            self.notices[instance_id] = {"action": action, "time": when}
