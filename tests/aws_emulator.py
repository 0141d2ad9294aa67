"""An EC2 emulator for tests: moto's server on 127.0.0.1, whose instances boot as real local processes.

moto (server mode) speaks the real EC2, SSM, STS and S3 APIs, so the AWS
provider runs unchanged against it through boto3's own endpoint setting
(``AWS_ENDPOINT_URL``). What moto 5.2 lacks and the tests need is added here,
in the open, as in-process patches of moto's backends (the server runs in a
thread of the test process), each with the AWS behaviour it copies:

- **ClientToken idempotency**: AWS answers a RunInstances repeated with the same
  ClientToken with the first request's reservation and launches nothing
  ("Ensuring idempotency", EC2 API reference); moto launches again.
- **Capacity refusals**: ``faults.spot_refused`` / ``faults.on_demand_refused``
  (sets of zones, ``"*"`` for all) answer ``InsufficientInstanceCapacity``, as
  AWS does when a zone has no capacity of that type and market.
- **Spot prices** from ``spot_prices`` (instance type -> zone -> $/h, stated by
  the test), dated now, as DescribeSpotPriceHistory answers; moto answers
  0.00001 for everything.
- **The Deep Learning AMI parameter**: AWS's public SSM parameters are
  reserved names (``/aws/service/...``) that nobody can put; the emulator
  answers them from ``ami_parameters`` (empty it to test a missing one).
- **EC2 vCPU quotas** from ``quotas`` (quota code -> vCPUs granted), as Service
  Quotas' GetServiceQuota answers for ``ec2``; moto serves only VPC quotas and
  answers NoSuchResourceException otherwise (as an endpoint that does not serve
  a quota does), which is what a code left out of the table gets.
- **Throttling**: the next ``faults.throttle`` EC2 calls answer
  ``RequestLimitExceeded`` (AWS's throttling code; botocore retries it with backoff).
- **A RunInstances that times out after launching**: with ``faults.run_delay``
  the next RunInstances creates its instance, then answers only after that
  many seconds (longer than the client's read timeout), once.
- **Terminate failing**: the next ``faults.terminate_failures`` TerminateInstances
  answer ``InternalError`` (HTTP 500) and terminate nothing.
- **The metadata service** (IMDSv2) of each instance, tests/imds_emulator.py, at
  the address botocore's ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` gives it;
  ``interrupt(id, in_seconds=)`` serves a spot interruption notice and terminates
  the instance when its time comes, as EC2 does; an instance launched with an
  instance profile gets its role's credentials there, as on EC2.
- **Who read S3**: ``s3_requests`` lists every S3 request (method, path, the
  access key id that signed it, from SigV4's ``Authorization`` credential
  scope), as CloudTrail's S3 data events record each request's
  ``accessKeyId``: tests see whose credentials read an object (a worker's
  session or role, or the notebook's own key). moto checks no signature.
- **Addresses**: each instance gets its own loopback address 127.X.Y.N (Linux
  routes all of 127/8 to lo) as its public and private IP, exported to its
  user data as CUMULO_BIND_HOST, so real dask schedulers and workers listen
  where the API says they are.

The runner boots every instance that moto lists as running: it runs the
instance's user data (base64, as EC2 hands it to cloud-init) as a process
group with CUMULO_ROOT set to a directory of its own, and kills the group when
the instance is shutting down or terminated, as a power-off would. An instance
that powers itself off (the first-boot script's power-off, CUMULO_POWEROFF
here) is terminated or stopped through the EC2 backend as its
``InstanceInitiatedShutdownBehavior`` says, as EC2 does.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moto.backends import get_backend
from moto.core.exceptions import ServiceException
from moto.ec2.models.instances import Instance as MotoInstance
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.responses import EC2Response
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import ThreadedMotoServer
from moto.servicequotas.models import ServiceQuotasBackend
from moto.ssm.models import Parameter, SimpleSystemManagerBackend

from .imds_emulator import ImdsEmulator
from .lambda_emulator import _live_groups

ACCOUNT = "123456789012"
DLAMI_X86 = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
DLAMI_ARM = "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


class _AwsError(ServiceException):
    """An error answer with AWS's code and message (moto serializes it as EC2's XML error)."""


@dataclass
class Faults:
    """What the emulator does wrong on purpose (see the module docstring)."""

    spot_refused: set[str] = field(default_factory=set)
    on_demand_refused: set[str] = field(default_factory=set)
    throttle: int = 0
    run_delay: float = 0.0
    terminate_failures: int = 0


@dataclass(frozen=True)
class S3Request:
    """One S3 request the emulator served: what CloudTrail's S3 data event says of it."""

    method: str
    #: path-style: /bucket/key
    path: str
    #: the access key id of the credentials that signed it (None: unsigned)
    access_key: str | None


@dataclass
class Booted:
    """An instance the runner boots: moto's object, its loopback address, its process group."""

    instance: MotoInstance
    ip: str
    region: str
    pgid: int | None = None
    workdir: Path | None = None


class AwsEmulator:
    """moto's server plus the patches and the runner; ``start()`` serves, ``close()`` kills every instance."""

    current: AwsEmulator | None = None

    def __init__(self, *, boot_seconds: float = 0.2, ssh_user: str | None = None) -> None:
        self.boot_seconds = boot_seconds
        #: the image's login user (an existing local account): each instance whose security group lets SSH in
        #: runs its own sshd on its address (tests/sshd.py), letting that user in with the launch's key pair
        self.ssh_user = ssh_user
        self.faults = Faults()
        self.spot_prices: dict[str, dict[str, float]] = {}
        self.ami_parameters = {DLAMI_X86: "ami-0a1b2c3d4e5f60718", DLAMI_ARM: "ami-0f1e2d3c4b5a69788"}
        self.quotas: dict[str, float] = {}
        self.booted: dict[str, Booted] = {}
        #: (region, client token) -> the reservation it launched
        self.tokens: dict[tuple[str, str], Any] = {}
        self.run_requests = 0
        #: ids of instances that powered themselves off
        self.powered_off: list[str] = []
        self._lock = threading.RLock()
        self._net = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"
        self._next_host = 2
        self._root = Path(tempfile.mkdtemp(prefix="aws-emulator-"))
        self._ssh_root: Path | None = None
        self._stop = threading.Event()
        self._server: ThreadedMotoServer | None = None
        self._runner: threading.Thread | None = None
        #: each instance's metadata service (IMDSv2), at its own path prefix
        self.imds = ImdsEmulator(role_of=self._role_of)
        #: instance id -> when EC2 takes it back (a spot interruption in progress)
        self.taken_back: dict[str, float] = {}
        #: every S3 request served, with the key that signed it (see the module docstring)
        self.s3_requests: list[S3Request] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach the emulator: boto3's own endpoint and credential settings."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "AKIAEMULATOR00000000",
                "AWS_SECRET_ACCESS_KEY": "emulator-secret-0123456789abcdefghijklmnop",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}

    def start(self) -> AwsEmulator:
        _install_patches()
        _reset_moto()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        AwsEmulator.current = self
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.imds.start()
        self._runner = threading.Thread(target=self._run_loop, daemon=True, name="aws-emulator-runner")
        self._runner.start()
        return self

    def close(self) -> None:
        """Stop serving and kill every instance's processes, whatever their state."""
        self._stop.set()
        if self._runner is not None:
            self._runner.join(10)
        with self._lock:
            booted = list(self.booted.values())
        _kill(*booted)
        if self._server is not None:
            self._server.stop()
        self.imds.close()
        if AwsEmulator.current is self:
            AwsEmulator.current = None
        _reset_moto()
        shutil.rmtree(self._root, ignore_errors=True)
        if self._ssh_root is not None:
            shutil.rmtree(self._ssh_root, ignore_errors=True)

    def __enter__(self) -> AwsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what tests look at --------------------------------------------------------------------

    def ec2(self, region: str = "us-east-1") -> Any:
        """moto's EC2 backend of the region (for reading state; requests go through the server)."""
        return get_backend("ec2")[ACCOUNT][region]

    def instances(self, region: str = "us-east-1") -> list[MotoInstance]:
        return [i for r in self.ec2(region).reservations.values() for i in r.instances]

    def live(self, region: str = "us-east-1") -> list[MotoInstance]:
        """Instances that are not terminated (what would still bill)."""
        return [i for i in self.instances(region) if i.state not in ("terminated",)]

    def cumulo_groups(self, region: str = "us-east-1") -> list[str]:
        return sorted(g.name for g in self.ec2(region).describe_security_groups() if g.name.startswith("cumulo-"))

    def cumulo_keys(self, region: str = "us-east-1") -> list[str]:
        return sorted(k.key_name for k in self.ec2(region).describe_key_pairs([]) if k.key_name.startswith("cumulo-"))

    def running_process_groups(self) -> list[int]:
        with self._lock:
            groups = {b.pgid for b in self.booted.values() if b.pgid is not None}
        return sorted(groups & _live_groups()) if groups else []

    def wait_idle(self, timeout: float = 15.0) -> bool:
        """Wait (bounded) until every instance is terminated and its processes are gone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.live() and not self.running_process_groups():
                return True
            time.sleep(0.05)
        return False

    def interrupt(self, instance_id: str, *, in_seconds: float = 120.0) -> float:
        """A spot interruption, as EC2 does it: the instance's metadata serves the notice now, and EC2
        terminates the instance ``in_seconds`` later (two minutes on AWS). Returns when."""
        at = time.time() + in_seconds
        self.imds.interrupt(instance_id, at)
        with self._lock:
            self.taken_back[instance_id] = at
        return at

    def _role_of(self, instance_id: str) -> str | None:
        """The role of the instance profile EC2 associated with the instance (None: none)."""
        with self._lock:
            b = self.booted.get(instance_id)
        if b is None:
            return None
        association = self.ec2(b.region).iam_instance_profile_associations.get(instance_id)
        roles = association.iam_instance_profile.roles if association is not None else []
        return roles[0].name if roles else None

    # -- the runner ----------------------------------------------------------------------------

    def _address(self) -> str:
        with self._lock:
            n = self._next_host
            self._next_host += 1
        return f"{self._net}.{n}"

    def _launched(self, region: str, reservation: Any) -> None:
        """Give each new instance its loopback address, and hand it to the runner."""
        for inst in reservation.instances:
            ip = self._address()
            nic = inst.nics[0]
            nic.public_ip = ip
            nic.private_ip_address = ip
            with self._lock:
                self.booted[inst.id] = Booted(inst, ip, region)

    def _run_loop(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                booted = list(self.booted.values())
            with self._lock:
                due = [iid for iid, at in self.taken_back.items() if at <= time.time()]
                for iid in due:
                    del self.taken_back[iid]
            for iid in due:
                b = self.booted.get(iid)
                if b is not None and b.instance.state not in ("terminated", "shutting-down"):
                    self.ec2(b.region).terminate_instances([iid])
            for b in booted:
                state = b.instance.state
                if state == "running" and b.pgid is None and b.workdir is None \
                        and time.monotonic() - b.instance.launch_time_monotonic >= self.boot_seconds:
                    self._boot(b)
                elif state == "running" and b.workdir is not None and (b.workdir / "poweroff").exists():
                    self._powered_off(b)
                elif state in ("shutting-down", "terminated", "stopped", "stopping") and b.pgid is not None:
                    _kill(b)
                    b.pgid = None

    def _powered_off(self, b: Booted) -> None:
        """The OS shut down: EC2 terminates or stops the instance, as its shutdown behaviour says."""
        (b.workdir / "poweroff").unlink()  # type: ignore[operator]
        self.powered_off.append(b.instance.id)
        backend = self.ec2(b.region)
        if b.instance.instance_initiated_shutdown_behavior == "terminate":
            backend.terminate_instances([b.instance.id])
        else:
            backend.stop_instances([b.instance.id])
        _kill(b)
        b.pgid = None

    def _boot(self, b: Booted) -> None:
        b.workdir = self._root / b.instance.id
        b.workdir.mkdir(mode=0o700)
        raw = b.instance.user_data[0] if isinstance(b.instance.user_data, list) else b.instance.user_data
        script = b.workdir / "user_data.sh"
        script.write_bytes(base64.b64decode(raw.as_bytes()) if raw else b"")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # an instance has no user keys
        env.update({"CUMULO_ROOT": str(b.workdir), "CUMULO_BIND_HOST": b.ip, "CUMULO_DASHBOARD_PORT": "0",
                    "CUMULO_POWEROFF": 'touch "$CUMULO_ROOT/poweroff"', "CUMULO_POWEROFF_POLL": "0.2",
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds.base(b.instance.id),
                    # the instance's route to AWS's endpoints (S3 here), as its VPC gives it; no credentials
                    "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": b.region,
                    "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")})
        sshd = ""
        if self.ssh_user and _lets_ssh_in(b.instance):
            sshd, host_public, port = self._sshd(b)
            env.update({"CUMULO_SSH_HOST_KEYS": str(host_public), "CUMULO_SSH_PORT": str(port)})
            sshd += " & "
        # a watchdog in the instance's group powers it off if the test process dies (even by SIGKILL)
        launcher = (f"( while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.5; done; kill -KILL 0 ) & {sshd}"
                    f"exec bash {shlex.quote(str(script))}")
        proc = subprocess.Popen(["bash", "-c", launcher], cwd=b.workdir, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        b.pgid = proc.pid
        threading.Thread(target=proc.wait, daemon=True).start()


    def _sshd(self, b: Booted) -> tuple[str, Path, int]:
        """The instance's sshd (its command, host public key, port), letting in its launch's key pair."""
        from . import sshd

        pairs = self.ec2(b.region).describe_key_pairs([b.instance.key_name]) if b.instance.key_name else []
        keys = "".join(k.public_key.strip() + "\n" for k in pairs)
        if self._ssh_root is None:  # readable by the login user: sshd reads authorized_keys as that user
            self._ssh_root = Path(tempfile.mkdtemp(prefix="aws-emulator-ssh-"))
            self._ssh_root.chmod(0o755)
        assert self.ssh_user is not None
        return sshd.instance_command(self._ssh_root / b.instance.id, b.ip, self.ssh_user, keys)


def _lets_ssh_in(instance: MotoInstance) -> bool:
    """Whether one of the instance's security groups lets TCP port 22 in from some address range."""
    for group in instance.security_groups:
        for rule in group.ingress_rules:
            if rule.ip_protocol in ("tcp", "-1") and rule.ip_range.get("CidrIp") and \
                    int(rule.from_port or 0) <= 22 <= int(rule.to_port or 65535):
                return True
    return False


def _kill(*booted: Booted) -> None:
    groups = {b.pgid for b in booted if b.pgid is not None}
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while groups and groups & _live_groups() and time.monotonic() < deadline:
        time.sleep(0.02)


def _reset_moto() -> None:
    """Forget every account's state (moto keeps it per process)."""
    for name in ("ec2", "ssm", "sts", "s3", "service-quotas"):
        get_backend(name).reset()  # type: ignore[call-overload]


# -- the patches (installed once per process; they act only while an emulator runs) ----------------


def _emu() -> AwsEmulator | None:
    return AwsEmulator.current


@functools.cache
def _install_patches() -> None:
    original_run = InstanceBackend.run_instances
    original_terminate = InstanceBackend.terminate_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: list[str],
                      **kwargs: Any) -> Any:
        emu = _emu()
        if emu is None:
            return original_run(self, image_id, count, user_data, security_group_names, **kwargs)
        region = self.region_name
        token = kwargs.get("client_token")
        with emu._lock:
            emu.run_requests += 1
            if token and token != "ABCDE" and (region, token) in emu.tokens:  # idempotent retry
                return emu.tokens[(region, token)]
        zone = kwargs.get("placement") or _subnet_zone(self, kwargs.get("subnet_id")) or f"{region}a"
        spot = bool(kwargs.get("instance_market_options"))
        refused = emu.faults.spot_refused if spot else emu.faults.on_demand_refused
        if zone in refused or "*" in refused:
            raise _AwsError("InsufficientInstanceCapacity",
                            f"We currently do not have sufficient {kwargs.get('instance_type')} capacity in the "
                            f"Availability Zone you requested ({zone}). Our system will be working on "
                            "provisioning additional capacity.")
        reservation = original_run(self, image_id, count, user_data, security_group_names, **kwargs)
        for inst in reservation.instances:
            inst.launch_time_monotonic = time.monotonic()
        emu._launched(region, reservation)
        with emu._lock:
            if token:
                emu.tokens[(region, token)] = reservation
            delay, emu.faults.run_delay = emu.faults.run_delay, 0.0
        if delay:
            emu._stop.wait(delay)  # launched, but the answer comes too late for the client
        return reservation

    def terminate_instances(self: Any, instance_ids: list[str]) -> Any:
        emu = _emu()
        if emu is not None:
            with emu._lock:
                if emu.faults.terminate_failures > 0:
                    emu.faults.terminate_failures -= 1
                    raise _AwsError("InternalError", "An internal error has occurred")
        result = original_terminate(self, instance_ids)
        if emu is not None:  # terminated means powered off: no process of it outlives the answer
            with emu._lock:
                ending = [emu.booted[i] for i in instance_ids if i in emu.booted]
            _kill(*ending)
            for b in ending:
                b.pgid = None
        return result

    InstanceBackend.run_instances = run_instances  # type: ignore[method-assign]
    InstanceBackend.terminate_instances = terminate_instances  # type: ignore[method-assign]

    original_call = EC2Response.call_action

    def call_action(self: Any) -> Any:
        emu = _emu()
        if emu is not None and emu.faults.throttle > 0:
            with emu._lock:
                throttled = emu.faults.throttle > 0
                if throttled:
                    emu.faults.throttle -= 1
            if throttled:
                body = ("<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit "
                        "exceeded.</Message></Error></Errors><RequestID>emulator</RequestID></Response>")
                return 503, {"Content-Type": "text/xml"}, body
        return original_call(self)

    EC2Response.call_action = call_action  # type: ignore[method-assign]

    def describe_spot_price_history(self: Any) -> Any:
        emu = _emu()
        types = self._get_param("InstanceTypes", [])
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        rows = []
        table = emu.spot_prices if emu is not None else {}
        for itype, zones in sorted(table.items()):
            if types and itype not in types:
                continue
            for zone, price in sorted(zones.items()):
                if zone.startswith(self.region):
                    rows.append({"InstanceType": itype, "ProductDescription": "Linux/UNIX", "SpotPrice": f"{price}",
                                 "AvailabilityZone": zone, "Timestamp": now})
        from moto.core.responses import ActionResult

        return ActionResult({"SpotPriceHistory": rows})

    EC2Response.describe_spot_price_history = describe_spot_price_history  # type: ignore[method-assign]

    original_get = SimpleSystemManagerBackend.get_parameter

    def get_parameter(self: Any, name: str) -> Any:
        emu = _emu()
        if emu is not None and name.startswith("/aws/service/"):
            value = emu.ami_parameters.get(name)
            if value is None:
                return None
            return Parameter(account_id=self.account_id, name=name, value=value, parameter_type="String",
                             description=None, allowed_pattern=None, keyid=None,
                             last_modified_date=datetime.now(timezone.utc), version=1, data_type="aws:ec2:image")
        return original_get(self, name)

    SimpleSystemManagerBackend.get_parameter = get_parameter  # type: ignore[method-assign]

    original_quota = ServiceQuotasBackend.get_service_quota

    def get_service_quota(self: Any, service_code: str, quota_code: str) -> dict[str, Any]:
        emu = _emu()
        if emu is not None and service_code == "ec2" and quota_code in emu.quotas:
            return {"ServiceCode": "ec2", "QuotaCode": quota_code, "QuotaName": quota_code,
                    "Value": emu.quotas[quota_code], "Unit": "None", "Adjustable": True, "GlobalQuota": False}
        return original_quota(self, service_code, quota_code)

    ServiceQuotasBackend.get_service_quota = get_service_quota  # type: ignore[method-assign]

    original_dispatch = DomainDispatcherApplication.__call__

    def dispatch(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        emu = _emu()
        if emu is not None:
            scope = _sigv4_scope(environ.get("HTTP_AUTHORIZATION", ""))
            if scope is not None and scope[1] == "s3":
                with emu._lock:
                    emu.s3_requests.append(S3Request(environ.get("REQUEST_METHOD", ""),
                                                     environ.get("PATH_INFO", ""), scope[0]))
        return original_dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = dispatch  # type: ignore[method-assign]


def _sigv4_scope(authorization: str) -> tuple[str, str] | None:
    """(access key id, service) from a SigV4 ``Authorization`` header
    (``AWS4-HMAC-SHA256 Credential=AKID/20261207/us-east-1/s3/aws4_request, ...``); None when unsigned."""
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return None
    for part in authorization[len("AWS4-HMAC-SHA256 "):].split(","):
        name, _, value = part.strip().partition("=")
        if name == "Credential":
            fields = value.split("/")
            if len(fields) == 5:
                return fields[0], fields[3]
    return None


def _subnet_zone(backend: Any, subnet_id: str | None) -> str | None:
    if not subnet_id:
        return None
    return str(backend.get_subnet(subnet_id).availability_zone)
