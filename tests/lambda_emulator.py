"""An emulator of Lambda Cloud's REST API v1 for tests: a real HTTP server on 127.0.0.1.

It follows the documented shapes (``{"data": ...}`` bodies, ``{"error": {"code",
"message", "suggestion"}}`` errors), Bearer auth, rate limits (429 with
Retry-After) and the instance lifecycle booting -> active -> terminating ->
terminated. When an instance becomes active the emulator runs its ``user_data``
as a real local process group, as cloud-init would. Each instance has two
loopback addresses (Linux routes all of 127/8 to lo), as a Lambda instance has
two: ``private_ip`` 127.X.Y.N, the only one its processes listen on (exported
to the script as CUMULO_BIND_HOST), which the other instances reach; and
``ip`` 127.X'.Y'.N, its public address, which the notebook reaches: a one-to-one
NAT (tests/nat.py) serves there every port that listens on the private address
and relays each connection to it, behaving as a network path does (a refused
dial is a reset; the public listeners close when the instance terminates).
So real dask schedulers and workers talk TLS to each other over the private
addresses and to the test over the public ones, and a test can see which
address each side dialled (``nat.accepted(ip)``). ``make_unhealthy(id)`` lists
an instance as ``unhealthy``. Terminating kills the process group.

Fault modes (attributes of ``Emulator.faults``, set by tests):
  no_capacity        set of instance type names with no capacity anywhere
  rate_limit_burst   the next N requests get 429 (JSON error body, Retry-After)
  cloudflare_429     the next N requests get 429 as Lambda's edge sends it: a text body ("error code: 1015"),
                     no Retry-After
  server_errors      the next N requests get 500
  stuck_booting      instances never leave booting
  terminate_failures the next N terminate requests get 500
  fail_launch_at     the Nth launch request (1-based) answers insufficient-capacity
  launch_500_after_create  launches create instances, then answer 500
  launch_500         the next N launch requests answer 500 without creating anything
  launch_delay       seconds a launch waits after creating instances, before answering
  echo_credentials   401 answers quote the Authorization header back (a careless server)
  ssh_key_500_after_create  POST /ssh-keys stores the key, then answers 500

``Emulator(ssh_user=NAME)``: each instance also runs its own sshd on its
address (tests/sshd.py), as an image does: a fresh host key, and the user NAME
(an existing local account, standing in for the image's ``ubuntu``) let in with
the public key registered under the name the launch gave. The instance's
scripts get CUMULO_SSH_HOST_KEYS and CUMULO_SSH_PORT to find it.

It enforces the facts in lambda_spec.py (the spec's routes, limits and error
codes): names of at most 64 characters, user data of at most 1 MB, launch
tags, at most 20 firewall rules, per-region firewall rulesets attached at
launch (same region only; deleting one still attached answers 409
``firewall-ruleset-in-use``; none in regions without firewalls), and an SSH
key that is already gone answers 400 ``global/invalid-parameters`` on delete.
``launches_per_minute`` adds the spec's window to ``launch_interval``.
More fault modes: ``account_error`` (every launch answers 403 with that code),
``provider_errors`` (the next N requests answer 503 ``provider/internal-unavailable``).

``forget(id)`` terminates an instance and drops it from every answer, as Lambda
stops listing instances some time after they terminate: GET /instances/{id}
answers 404 and a terminate naming it is refused as a whole (400).

Launch follows the documented API: one instance per request (``quantity``
above 1 is refused, as other Lambda clients report) and exactly one existing
SSH key name. SSH keys can be added (``POST /ssh-keys`` with ``name`` and
``public_key``, or without a public key to have one generated) and deleted
(``DELETE /ssh-keys/{id}``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

try:
    from . import lambda_spec as spec
    from .nat import Nat
except ImportError:  # run as a script: python tests/lambda_emulator.py
    import lambda_spec as spec  # type: ignore[no-redef]
    from nat import Nat  # type: ignore[no-redef]

PRICES = {  # cents per hour, public list prices (DESIGN.md anchors; others plausible)
    "gpu_1x_a10": (75, "1x A10 (24 GB PCIe)", 30, 200, 1),
    "gpu_1x_a100": (129, "1x A100 (40 GB PCIe)", 30, 200, 1),
    "gpu_1x_a100_sxm4": (129, "1x A100 (40 GB SXM4)", 30, 200, 1),
    "gpu_8x_a100_80gb_sxm4": (1432, "8x A100 (80 GB SXM4)", 240, 1800, 8),
    "gpu_1x_h100_pcie": (249, "1x H100 (80 GB PCIe)", 26, 200, 1),
    "gpu_1x_h100_sxm5": (329, "1x H100 (80 GB SXM5)", 26, 225, 1),
    "gpu_8x_h100_sxm5": (2392, "8x H100 (80 GB SXM5)", 208, 1800, 8),
}
#: (family, name, version) of the images offered, with the regions each is in (every region when None)
IMAGES = [("lambda-stack-22-04", "Lambda Stack 22.04", "1.0.0", None),
          ("lambda-stack-22-04", "Lambda Stack 22.04", "1.1.0", None),
          ("ubuntu-22-04", "Ubuntu 22.04", "1.0.0", ("us-east-1", "us-west-1"))]
REGIONS = {"us-south-1": "Texas, USA", "us-east-1": "Virginia, USA", "us-west-1": "California, USA",
           "europe-central-1": "Germany"}


@dataclass
class Faults:
    """What the emulator does wrong on purpose (see the module docstring)."""

    no_capacity: set[str] = field(default_factory=set)
    rate_limit_burst: int = 0
    cloudflare_429: int = 0
    server_errors: int = 0
    stuck_booting: bool = False
    terminate_failures: int = 0
    fail_launch_at: int | None = None
    launch_500_after_create: bool = False
    launch_500: int = 0
    launch_delay: float = 0.0
    echo_credentials: bool = False
    ssh_key_500_after_create: bool = False
    account_error: str | None = None
    provider_errors: int = 0


@dataclass
class Instance:
    id: str
    name: str
    type_name: str
    region: str
    #: the public address (what the notebook reaches, through the NAT) and the private one (what the
    #: instance's processes listen on, and the other instances reach)
    ip: str
    private_ip: str
    user_data: str
    status: str = "booting"
    created: float = field(default_factory=time.monotonic)
    changed: float = field(default_factory=time.monotonic)
    pgid: int | None = None
    workdir: Path | None = None
    listed: bool = True
    ssh_key_names: list[str] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    rulesets: list[str] = field(default_factory=list)
    image: str | None = None

    def to_json(self) -> dict[str, Any]:
        cents, desc, vcpus, mem, gpus = PRICES[self.type_name]
        up = self.status in ("active", "unhealthy", "terminating", "preempted")
        return {
            "id": self.id, "name": self.name, "status": self.status,
            "ip": self.ip if up else None, "private_ip": self.private_ip if up else None,
            "hostname": f"{self.ip.replace('.', '-')}-emulated", "ssh_key_names": list(self.ssh_key_names),
            "tags": [dict(t) for t in self.tags], "firewall_rulesets": [{"id": r} for r in self.rulesets],
            "image": {"id": self.image} if self.image else None,
            "file_system_names": [], "is_reserved": False,
            "region": {"name": self.region, "description": REGIONS[self.region]},
            "instance_type": {"name": self.type_name, "description": desc, "price_cents_per_hour": cents,
                              "specs": {"vcpus": vcpus, "memory_gib": mem, "storage_gib": 512, "gpus": gpus}},
        }


class Emulator:
    """The emulated API. ``start()`` serves on 127.0.0.1:<free port>; ``close()`` kills every instance."""

    def __init__(self, *, api_key: str = "secret_emulator_key_0123456789abcdef", boot_seconds: float = 0.3,
                 terminate_seconds: float = 0.2, request_interval: float = 0.0, launch_interval: float = 0.0,
                 retry_after: float = 0.05, max_instances: int = 12, image: str = "bare",
                 ssh_user: str | None = None, launches_per_minute: int = 0) -> None:
        if image not in ("bare", "prepared"):
            raise ValueError("image is 'bare' (the system's python3 only) or 'prepared' (the test's Python)")
        #: "bare": an instance has the system's python3 and nothing else, as a fresh cloud image would,
        #: so whatever its workers import was installed by cumulo. "prepared": the test's own Python is on
        #: PATH, as an image with dask preinstalled would be (for tests with cumulo.cloud.install-packages off).
        self.image = image
        self.ssh_user = ssh_user
        self.api_key = api_key
        self.boot_seconds, self.terminate_seconds = boot_seconds, terminate_seconds
        self.request_interval, self.launch_interval = request_interval, launch_interval
        self.retry_after, self.max_instances = retry_after, max_instances
        self.launches_per_minute = launches_per_minute
        self._launch_times: list[float] = []
        #: firewall rulesets by id: {"id", "name", "region", "rules"}
        self.rulesets: dict[str, dict[str, Any]] = {}
        #: GET /images: one entry per image and region
        self.images = [{"id": f"img-{family}-{version}-{r}".replace(".", ""), "family": family, "name": name,
                        "version": version, "architecture": "x86_64", "region": {"name": r, "description": d}}
                       for family, name, version, where in IMAGES for r, d in REGIONS.items()
                       if where is None or r in where]
        self.faults = Faults()
        self.instances: dict[str, Instance] = {}
        self.firewall: list[dict[str, Any]] = [
            {"protocol": "tcp", "port_range": [22, 22], "source_network": "0.0.0.0/0", "description": "SSH"}]
        #: A key someone else on the account registered (a colleague's): cumulo must never pick it on its own.
        self.ssh_keys = [{"id": "k1", "name": "emulator-key", "public_key": "ssh-ed25519 AAAA emulator"}]
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.launches = 0
        self._lock = threading.RLock()
        self._last_request = 0.0
        self._last_launch = 0.0
        second = random.randint(100, 249)
        self._net = f"127.{second}.{random.randint(0, 250)}"  # private addresses
        self._public_net = f"127.{second + 1}.{random.randint(0, 250)}"  # public addresses
        self._next_host = 2
        #: the public addresses: each instance's ip, translated to its private_ip
        self.nat: Nat | None = None
        self._root = Path(tempfile.mkdtemp(prefix="lambda-emulator-"))
        self._ssh_root: Path | None = None
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def start(self) -> Emulator:
        emulator = self

        class Handler(_Handler):
            emu = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.nat = Nat()
        for target in (self._server.serve_forever, self._tick_loop):
            t = threading.Thread(target=target, daemon=True, name=f"lambda-emulator-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        """Stop serving and kill every instance's processes (whatever state they are in)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(10)
        with self._lock:
            insts = list(self.instances.values())
        self._kill(*insts)
        if self.nat is not None:
            self.nat.close()
        shutil.rmtree(self._root, ignore_errors=True)
        if self._ssh_root is not None:
            shutil.rmtree(self._ssh_root, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def live(self) -> list[Instance]:
        """Instances that are not terminated or preempted (what would still bill)."""
        with self._lock:
            return [i for i in self.instances.values() if i.status not in ("terminated", "preempted")]

    def preempt(self, instance_id: str) -> None:
        """Lambda takes the instance back: its processes die at once and it is listed as ``preempted``."""
        with self._lock:
            inst = self.instances[instance_id]
        self._kill(inst)
        with self._lock:
            inst.status, inst.changed = "preempted", time.monotonic()

    def cumulo_rulesets(self) -> list[str]:
        """Names of the firewall rulesets cumulo made (named cumulo-...) still on the account."""
        with self._lock:
            return sorted(r["name"] for r in self.rulesets.values() if r["name"].startswith("cumulo-"))

    def forget(self, instance_id: str) -> None:
        """Terminate an instance at once and stop listing it (Lambda forgets terminated instances)."""
        with self._lock:
            inst = self.instances[instance_id]
        self._kill(inst)
        with self._lock:
            inst.status, inst.changed, inst.listed = "terminated", time.monotonic(), False

    def listed(self) -> list[Instance]:
        """Instances the API still shows."""
        with self._lock:
            return [i for i in self.instances.values() if i.listed]

    def running_process_groups(self) -> list[int]:
        """Process groups of instances that still have a live process."""
        with self._lock:
            groups = {i.pgid for i in self.instances.values() if i.pgid is not None}
        return sorted(groups & _live_groups()) if groups else []

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until every instance is terminated and its processes are gone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.live() and not self.running_process_groups():
                return True
            time.sleep(0.05)
        return False

    # -- the state machine -------------------------------------------------------------------

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            ending = []
            with self._lock:
                for inst in self.instances.values():
                    if inst.status == "booting" and not self.faults.stuck_booting \
                            and now - inst.changed >= self.boot_seconds:
                        inst.status, inst.changed = "active", now
                        self._run_user_data(inst)
                    elif inst.status == "terminating" and now - inst.changed >= self.terminate_seconds:
                        ending.append(inst)
            if ending:  # killing takes a moment: not under the lock
                self._kill(*ending)
                with self._lock:
                    for inst in ending:
                        inst.status, inst.changed = "terminated", time.monotonic()

    def _run_user_data(self, inst: Instance) -> None:
        inst.workdir = self._root / inst.id
        inst.workdir.mkdir(mode=0o700)
        script = inst.workdir / "user_data.sh"
        script.write_text(inst.user_data)
        env = dict(os.environ)
        if self.image == "bare":
            for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYENV_VERSION"):
                env.pop(name, None)
            path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        else:
            path = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update({
            "CUMULO_ROOT": str(inst.workdir), "CUMULO_BIND_HOST": inst.private_ip,
            "CUMULO_DASHBOARD_PORT": "0", "PATH": path,
        })
        env.pop("LAMBDA_API_KEY", None)  # an instance never sees the user's key
        sshd = ""
        if self.ssh_user:
            sshd, host_public, port = self._sshd(inst)
            env.update({"CUMULO_SSH_HOST_KEYS": str(host_public), "CUMULO_SSH_PORT": str(port)})
            sshd += " & "
        # A watchdog in the instance's process group powers it off if the emulator's process dies
        # (even by SIGKILL), so a crashed test run leaves no dask processes behind.
        launcher = (f"( while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.5; done; kill -KILL 0 ) & {sshd}"
                    f"exec bash {shlex.quote(str(script))}")
        proc = subprocess.Popen(["bash", "-c", launcher], cwd=inst.workdir, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        inst.pgid = proc.pid
        threading.Thread(target=proc.wait, daemon=True).start()  # reap the bash parent

    def _sshd(self, inst: Instance) -> tuple[str, Path, int]:
        """The instance's sshd (its command, host public key, port), letting in its launch's registered key."""
        from . import sshd

        keys = "".join(k["public_key"] + "\n" for k in self.ssh_keys if k["name"] in inst.ssh_key_names)
        if self._ssh_root is None:  # readable by the login user: sshd reads authorized_keys as that user
            self._ssh_root = Path(tempfile.mkdtemp(prefix="lambda-emulator-ssh-"))
            self._ssh_root.chmod(0o755)
        assert self.ssh_user is not None
        return sshd.instance_command(self._ssh_root / inst.id, inst.private_ip, self.ssh_user, keys)

    def make_unhealthy(self, instance_id: str) -> None:
        """Lambda lists the instance as ``unhealthy`` (its processes keep running)."""
        with self._lock:
            inst = self.instances[instance_id]
            inst.status, inst.changed = "unhealthy", time.monotonic()

    def _kill(self, *insts: Instance) -> None:
        # Termination is a power-off: SIGKILL each process group, then wait (bounded) until none is left.
        if self.nat is not None:  # a powered-off instance's public address answers nothing
            for inst in insts:
                self.nat.remove(inst.ip)
        groups = {i.pgid for i in insts if i.pgid is not None}
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5.0
        while groups and groups & _live_groups() and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- request handling ----------------------------------------------------------------------

    def handle(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            status, payload, headers = self._handle(method, path, auth, body)
            self.requests.append((method, path, status))
        if status == 200 and path.endswith("/launch") and self.faults.launch_delay:
            self._stop.wait(self.faults.launch_delay)  # outside the lock: the instances already exist
        return status, payload, headers

    def _error(self, status: int, code: str, message: str, suggestion: str = "") -> tuple[int, Any, dict[str, str]]:
        err = {"code": code, "message": message}
        if suggestion:
            err["suggestion"] = suggestion
        headers = {"Retry-After": f"{self.retry_after:g}"} if status == 429 else {}
        return status, {"error": err}, headers

    def _handle(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any, dict[str, str]]:
        if not path.startswith("/api/v1/"):
            return self._error(404, "global/object-does-not-exist", "Not found")
        route = path[len("/api/v1"):]
        if auth != f"Bearer {self.api_key}":
            echo = f" (received {auth})" if self.faults.echo_credentials else ""
            return self._error(401, "global/invalid-api-key", f"API key was invalid, expired, or deleted{echo}.",
                               "Check your API key or create a new one, then try again.")
        now = time.monotonic()
        if self.faults.rate_limit_burst > 0:
            self.faults.rate_limit_burst -= 1
            return self._error(429, "global/too-many-requests", "Too many requests.")
        if self.faults.cloudflare_429 > 0:
            self.faults.cloudflare_429 -= 1
            return 429, "error code: 1015", {}
        is_launch = route == "/instance-operations/launch"
        recent = [t for t in self._launch_times if now - t < 60.0]
        if now - self._last_request < self.request_interval or \
                (is_launch and now - self._last_launch < self.launch_interval) or \
                (is_launch and self.launches_per_minute and len(recent) >= self.launches_per_minute):
            return self._error(429, "global/too-many-requests", "Too many requests.")
        self._last_request = now
        if self.faults.server_errors > 0:
            self.faults.server_errors -= 1
            return self._error(500, "global/internal-error", "Something went wrong.")
        if self.faults.provider_errors > 0:
            self.faults.provider_errors -= 1
            return self._error(503, "provider/internal-unavailable", "An upstream provider is unavailable.",
                               "Try again in a few moments.")
        if method == "GET" and route == "/instance-types":
            return 200, {"data": self._types()}, {}
        if method == "GET" and route == "/images":
            return 200, {"data": [dict(i) for i in self.images]}, {}
        if method == "GET" and route == "/instances":
            return 200, {"data": [i.to_json() for i in self.instances.values() if i.listed]}, {}
        if method == "GET" and route.startswith("/instances/"):
            inst = self.instances.get(route.rsplit("/", 1)[1])
            if inst is None or not inst.listed:
                return self._error(404, "global/object-does-not-exist", "Specified instance does not exist.")
            return 200, {"data": inst.to_json()}, {}
        if method == "GET" and route == "/ssh-keys":
            return 200, {"data": [dict(k) for k in self.ssh_keys]}, {}
        if method == "POST" and route == "/ssh-keys":
            return self._add_key(body or {})
        if method == "DELETE" and route.startswith("/ssh-keys/"):
            key_id = route.rsplit("/", 1)[1]
            if not any(k["id"] == key_id for k in self.ssh_keys):  # the real API's answer, not a 404
                return self._error(400, "global/invalid-parameters", "Invalid SSH key ID.")
            self.ssh_keys = [k for k in self.ssh_keys if k["id"] != key_id]
            return 200, {"data": {}}, {}
        if method == "GET" and route == "/firewall-rules":
            return 200, {"data": [dict(r) for r in self.firewall]}, {}
        if method == "GET" and route == "/firewall-rulesets":
            return 200, {"data": [self._ruleset_json(r) for r in self.rulesets.values()]}, {}
        if method == "POST" and route == "/firewall-rulesets":
            return self._add_ruleset(body or {})
        if method == "DELETE" and route.startswith("/firewall-rulesets/"):
            return self._delete_ruleset(route.rsplit("/", 1)[1])
        if method == "PUT" and route == "/firewall-rules":
            rules = (body or {}).get("data")
            if not isinstance(rules, list):
                return self._error(400, "global/invalid-parameters", "data must be a list of rules")
            if len(rules) > spec.MAX_FIREWALL_RULES:
                return self._error(400, "global/invalid-parameters",
                                   f"At most {spec.MAX_FIREWALL_RULES} firewall rules are allowed.")
            self.firewall = [dict(r) for r in rules]
            return 200, {"data": self.firewall}, {}
        if method == "POST" and is_launch:
            self._last_launch = now
            self._launch_times = [*recent, now]
            if self.faults.account_error:
                return self._error(403, self.faults.account_error, {
                    "global/invalid-address": "Your account has an invalid billing address.",
                    "global/account-inactive": "Your account is inactive."}.get(self.faults.account_error,
                                                                              "Forbidden."))
            if self.faults.launch_500 > 0:
                self.faults.launch_500 -= 1
                self.launches += 1
                return self._error(500, "global/internal-error", "Something went wrong.")
            return self._launch(body or {})
        if method == "POST" and route == "/instance-operations/terminate":
            if self.faults.terminate_failures > 0:
                self.faults.terminate_failures -= 1
                return self._error(500, "global/internal-error", "Something went wrong.")
            return self._terminate(body or {})
        return self._error(404, "global/object-does-not-exist", f"No route {method} {route}")

    def _types(self) -> dict[str, Any]:
        out = {}
        for name, (cents, desc, vcpus, mem, gpus) in PRICES.items():
            regions = [] if name in self.faults.no_capacity else [
                {"name": r, "description": d} for r, d in REGIONS.items()]
            out[name] = {"instance_type": {
                "name": name, "description": desc, "price_cents_per_hour": cents,
                "specs": {"vcpus": vcpus, "memory_gib": mem, "storage_gib": 512, "gpus": gpus}},
                "regions_with_capacity_available": regions}
        return out

    def _launch(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        self.launches += 1
        type_name, region = body.get("instance_type_name"), body.get("region_name")
        quantity, keys = body.get("quantity", 1), body.get("ssh_key_names") or []
        if type_name not in PRICES or region not in REGIONS:
            return self._error(400, "global/invalid-parameters", "Unknown instance type or region.")
        if len(keys) != 1 or keys[0] not in {k["name"] for k in self.ssh_keys}:
            return self._error(400, "global/invalid-parameters", "Exactly one existing SSH key name is required.")
        if not isinstance(quantity, int) or quantity < 1:
            return self._error(400, "global/invalid-parameters", "quantity must be a positive integer.")
        if quantity > 1:
            return self._error(400, "global/invalid-parameters", "Requested too many instances.",
                               "Input should be less than or equal to 1")
        name, user_data = str(body.get("name") or ""), str(body.get("user_data") or "")
        if len(name) > spec.MAX_NAME:
            return self._error(400, "global/invalid-parameters", f"name must be at most {spec.MAX_NAME} characters.")
        if len(user_data.encode()) > spec.MAX_USER_DATA:
            return self._error(400, "global/invalid-parameters", "user_data must be at most 1 MB.")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or len(tags) > spec.MAX_TAGS or not all(
                isinstance(t, dict) and re.match(spec.TAG_KEY, str(t.get("key", ""))) and
                isinstance(t.get("value"), str) and len(t["value"]) <= spec.MAX_TAG_VALUE for t in tags):
            return self._error(400, "global/invalid-parameters", "tags must be a list of {key, value}; keys are "
                               "lower-case letters, digits and '-'.")
        image = (body.get("image") or {}).get("id") if body.get("image") else None
        if image is not None and not any(i["id"] == image and i["region"]["name"] == region for i in self.images):
            return self._error(400, "global/invalid-parameters", f"Image {image} does not exist in region {region}.")
        attached = [str((r or {}).get("id")) for r in body.get("firewall_rulesets") or []]
        for rid in attached:
            if rid not in self.rulesets or self.rulesets[rid]["region"] != region:
                return self._error(400, "global/invalid-parameters",
                                   f"Firewall ruleset {rid} does not exist in region {region}.")
        if type_name in self.faults.no_capacity or self.faults.fail_launch_at == self.launches:
            return self._error(400, "instance-operations/launch/insufficient-capacity",
                               "Not enough capacity to fulfill launch request.",
                               "Choose an instance type with more availability, or try again later.")
        if len(self.live()) + quantity > self.max_instances:
            return self._error(400, "global/quota-exceeded", "Quota exceeded.",
                               "Contact support to increase your quota.")
        ids = []
        for _ in range(quantity):
            iid = uuid.uuid4().hex
            ip, private_ip = f"{self._public_net}.{self._next_host}", f"{self._net}.{self._next_host}"
            self._next_host += 1
            if self.nat is not None:
                self.nat.add(ip, private_ip)
            self.instances[iid] = Instance(iid, name, type_name, region, ip, private_ip, user_data,
                                           ssh_key_names=list(keys),
                                           tags=[dict(t) for t in tags], rulesets=attached, image=image)
            ids.append(iid)
        if self.faults.launch_500_after_create:
            return self._error(500, "global/internal-error", "Something went wrong.")
        return 200, {"data": {"instance_ids": ids}}, {}

    def _terminate(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        ids = body.get("instance_ids") or []
        missing = [i for i in ids if i not in self.instances or not self.instances[i].listed]
        if missing:
            return self._error(400, "global/invalid-parameters", f"Unknown instance(s): {', '.join(missing)}")
        out = []
        for iid in ids:
            inst = self.instances[iid]
            if inst.status not in ("terminating", "terminated"):
                inst.status, inst.changed = "terminating", time.monotonic()
            out.append(inst.to_json())
        return 200, {"data": {"terminated_instances": out}}, {}


    def _ruleset_json(self, rs: dict[str, Any]) -> dict[str, Any]:
        users = [i.id for i in self.instances.values()
                 if rs["id"] in i.rulesets and i.status not in ("terminated", "preempted")]
        return {**rs, "rules": [dict(r) for r in rs["rules"]], "instance_ids": users}

    def _add_ruleset(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        name, region, rules = body.get("name"), body.get("region"), body.get("rules")
        if not isinstance(name, str) or not 1 <= len(name) <= spec.MAX_NAME:
            return self._error(400, "global/invalid-parameters", f"name must be 1 to {spec.MAX_NAME} characters.")
        if region not in REGIONS:
            return self._error(400, "global/invalid-parameters", f"Unknown region {region}.")
        if region in spec.NO_FIREWALL_REGIONS:
            return self._error(400, "global/invalid-parameters", f"Firewall rules are not supported in {region}.")
        if not isinstance(rules, list) or len(rules) > spec.MAX_FIREWALL_RULES or not all(
                isinstance(r, dict) and r.get("protocol") in ("tcp", "udp", "icmp", "all") and
                isinstance(r.get("source_network"), str) for r in rules):
            return self._error(400, "global/invalid-parameters",
                               f"rules must be a list of at most {spec.MAX_FIREWALL_RULES} rules.")
        rid = uuid.uuid4().hex
        self.rulesets[rid] = {"id": rid, "name": name, "region": region, "rules": [dict(r) for r in rules]}
        return 200, {"data": self._ruleset_json(self.rulesets[rid])}, {}

    def _delete_ruleset(self, rid: str) -> tuple[int, Any, dict[str, str]]:
        rs = self.rulesets.get(rid)
        if rs is None:
            return self._error(404, "global/object-does-not-exist", "Specified firewall ruleset does not exist.")
        if self._ruleset_json(rs)["instance_ids"]:
            return self._error(409, "firewall-ruleset-in-use", "The firewall ruleset is attached to instances.",
                               "Terminate or detach them first.")
        del self.rulesets[rid]
        return 200, {"data": {}}, {}

    def _add_key(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        name, public = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            return self._error(400, "global/invalid-parameters", "name must be 1 to 64 characters.")
        if any(k["name"] == name for k in self.ssh_keys):
            return self._error(400, "global/invalid-parameters", "SSH key name already in use.")
        key: dict[str, Any] = {"id": uuid.uuid4().hex, "name": name}
        if public is None:
            key["public_key"] = f"ssh-ed25519 AAAAgenerated{uuid.uuid4().hex} {name}"
            answer = {**key, "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nemulated\n"}
        elif not isinstance(public, str) or not public.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-")) \
                or len(public) > 4096:
            return self._error(400, "global/invalid-parameters", "public_key is not a valid SSH public key.")
        else:
            key["public_key"] = public
            answer = dict(key)
        self.ssh_keys.append(key)
        if self.faults.ssh_key_500_after_create:
            return self._error(500, "global/internal-error", "Something went wrong.")
        return 200, {"data": answer}, {}


def _live_groups() -> set[int]:
    """Process groups that have a member which is running (zombies awaiting their reaper do not count)."""
    out = set()
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE:
                out.add(os.getpgid(p.pid))
        except (psutil.Error, ProcessLookupError):
            continue
    return out


class _Handler(BaseHTTPRequestHandler):
    emu: Emulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle + delayed ACK add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status, payload, headers = self.emu.handle(method, self.path, self.headers.get("Authorization"), body)
        text = isinstance(payload, str)
        data = (payload if text else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


def main() -> None:
    """Run the emulator in the foreground (for the example notebook or manual poking)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boot-seconds", type=float, default=2.0)
    args = parser.parse_args()
    emu = Emulator(boot_seconds=args.boot_seconds).start()
    print(f"LAMBDA_EMULATOR_URL={emu.base_url}", flush=True)
    print(f"LAMBDA_API_KEY={emu.api_key}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        emu.close()


if __name__ == "__main__":
    main()
