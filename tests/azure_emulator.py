"""An Azure Resource Manager emulator for tests: HTTPS on 127.0.0.1, whose VMs boot as real local processes.

It speaks exactly the ARM routes and api-versions that the Azure provider's SDK
calls make (azure-mgmt-resource 26, -compute 39, -network 33; :data:`API_VERSIONS`):
a call to anything else answers 400 ``InvalidApiVersionParameter`` or 404
``InvalidResourceType``, as ARM does, and every call is kept in ``calls`` so a
test can hold the emulator's list and the SDK's calls in step. ARM's paths are
case-insensitive; so are these.

- **TLS**: azure-core's bearer-token policy refuses plain http (``enforce_https``),
  so the emulator serves HTTPS with a certificate from a throw-away CA made per
  emulator; :meth:`ArmEmulator.env` gives ``REQUESTS_CA_BUNDLE`` pointing at it,
  which the SDK's requests transport trusts (``connection_verify`` left as is).
- **Auth**: ``Authorization: Bearer <token>`` must be the emulator's token; else
  401 with ARM's ``InvalidAuthenticationToken`` body and ``WWW-Authenticate``
  challenge. The token never appears in an answer.
- **Resource groups**: PUT, GET, HEAD, list (``$filter=tagName eq '...'``), and
  DELETE as ARM does it: 202 with a ``Location`` to poll (202 while deleting, 200
  when done); deleting a group deletes everything in it (its VMs' processes killed).
- **Network**: NSGs, vnets (subnets inside), public IPs and NICs: PUT answers 201
  ``Succeeded`` at once; a NIC gets the next 127.X.Y.N address as its private IP
  (and its public IP's ``ipAddress``), and lists ``virtualMachine`` once a VM uses it.
- **VMs**: PUT answers 201 ``Creating`` with ``Azure-AsyncOperation`` (and the
  SDK polls it); after ``boot_seconds`` the operation is ``Succeeded`` and the VM
  boots: its base64 ``customData`` runs as a process group with CUMULO_ROOT,
  CUMULO_BIND_HOST (the NIC's address) and CUMULO_DASHBOARD_PORT=0, the test's
  Python on PATH, and a watchdog that kills the group if the test process dies.
  GET (``$expand=instanceView``), ``/instanceView``, list over the subscription,
  DELETE (202 + ``Azure-AsyncOperation`` + ``Location``; the group is killed,
  the NIC deleted with ``deleteOption: Delete``).
- **Resource SKUs** per location from ``skus`` (size -> family, vCPUs, locations), and **compute usages**
  per location: each quota of ``quotas`` (a family's vCPUs, ``cores`` the regional total) with what the
  emulator's VMs there take.
- **Spot VMs**: a VM PUT may carry ``priority`` ("Regular", "Low" or "Spot"),
  ``evictionPolicy`` ("Delete" or "Deallocate", required with Spot, refused
  otherwise) and ``billingProfile.maxPrice`` (-1 or above 0, with Spot only), as
  ARM validates them (400 ``InvalidParameter``). Spot VMs take the region's
  ``lowPriorityCores`` usage and not their family's or ``cores``.
  :meth:`ArmEmulator.preempt` evicts one as Azure does: its metadata service
  (tests/azure_metadata_emulator.py, ``metadata.endpoint``) posts a Preempt
  Scheduled Event with ``NotBefore`` now + N seconds, and when that time comes
  the VM is deleted (eviction policy Delete: its disk and NIC with it; its
  processes killed).
- **Deleting singly** (a cluster in an existing resource group, and a refused
  Spot VM's NIC and public IP): NICs, public IPs, vnets and NSGs answer DELETE
  as ARM's network provider does, 202 with ``Azure-AsyncOperation`` (a
  Microsoft.Network operation) and ``Location``, the resource gone when the
  operation is done; 204 when there was none; 400 while something uses it (a
  NIC held by a VM, a public IP by a NIC, a vnet whose subnet a NIC is in, an
  NSG a subnet or NIC carries), so teardown has to delete in ARM's order.
- **OS disks**: a VM PUT makes its ``osDisk`` a managed disk (``managedBy`` the
  VM), deleted with the VM when its ``deleteOption`` is Delete, else detached;
  disks are listed over the subscription and answer GET and DELETE (202 +
  ``Azure-AsyncOperation``; 409 while attached).
- **Managed identities**: a VM PUT may carry ``identity`` (``UserAssigned`` with
  ``userAssignedIdentities`` keyed by identity resource ids, validated as ARM
  does: 400 ``InvalidParameter`` otherwise); the VM keeps it (``vm.body["identity"]``),
  each identity given a principal and client id.
- **Existing groups**: :meth:`ArmEmulator.add_group` and :meth:`ArmEmulator.add_foreign`
  put a group and resources there that cumulo did not create.
- **Faults** (:class:`Faults`): ``throttle`` (the next N calls answer 429 with
  ``Retry-After``), ``fail_after_accept`` (the next N VM PUTs are accepted and
  their operation then fails with ``InternalExecutionError``, the VM left
  ``Failed``), ``delete_failures`` (the next N VM or group deletes answer 500),
  ``spot_refused`` (the next N Spot VM PUTs are refused with ``spot_error``'s
  code and message: ARM's ``{"error": {"code", "message"}}``, on the VM's
  long-running operation after a 201 when ``spot_refused_at`` is "operation",
  the VM then left ``Failed`` as ARM leaves it, or on the PUT itself, 409,
  when it is "put").
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import signal
import ssl
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
from urllib.parse import parse_qs, urlsplit

from .azure_metadata_emulator import MetadataEmulator
from .lambda_emulator import _live_groups

SUBSCRIPTION = "00000000-0000-4000-8000-00000000c0de"
#: ARM resource type (lower case) -> the api-version the SDK calls it with.
API_VERSIONS = {
    "resourcegroups": "2025-04-01",
    "operationresults": "2025-04-01",
    "microsoft.network": "2026-03-01",
    "microsoft.compute/virtualmachines": "2026-04-01",
    "microsoft.compute/locations": "2026-04-01",
    "microsoft.compute/skus": "2021-07-01",
    "microsoft.compute/disks": "2026-03-02",
}
#: A user-assigned managed identity's resource id, as ARM checks it.
_IDENTITY = re.compile(r"/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.managedidentity/"
                       r"userassignedidentities/[^/]+", re.IGNORECASE)
#: VM sizes the emulator's Resource SKUs list: their family, vCPUs, and where.
SKUS = {"Standard_NC24ads_A100_v4": ("standardNCADSA100v4Family", 24, ["eastus", "westus2"]),
        "Standard_NC4as_T4_v3": ("standardNCASv3_T4Family", 4, ["eastus"]),
        "Standard_NC40ads_H100_v5": ("standardNCadsH100v5Family", 40, ["eastus"])}
#: vCPU quotas per family (and "cores", the regional total; "lowPriorityCores", Spot VMs') unless a test sets its own.
QUOTAS = {"cores": 350, "lowPriorityCores": 100, **{family: 100 for family, _, _ in SKUS.values()}}
#: ARM's refusals of a Spot VM, as it words them (code, message).
ALLOCATION_FAILED = ("AllocationFailed", "Allocation failed. We do not have sufficient capacity for the requested VM "
                     "size in this region. Read more about improving likelihood of allocation success at "
                     "http://aka.ms/allocation-guidance")
LOW_PRIORITY_QUOTA = ("OperationNotAllowed", "Operation could not be completed as it results in exceeding approved "
                      "LowPriorityCores quota. Additional details - Deployment Model: Resource Manager, Location: "
                      "eastus, Current Limit: 0, Current Usage: 0, Additional Required: 24, (Minimum) New Limit "
                      "Required: 24. Submit a request for Quota increase at https://aka.ms/ProdportalCRP by "
                      "specifying parameters listed in the 'Details' section for deployment to succeed.")


@dataclass
class Faults:
    """Failures the next calls meet (counts go down as they are used)."""

    throttle: int = 0
    retry_after: int = 1
    fail_after_accept: int = 0
    delete_failures: int = 0
    spot_refused: int = 0
    spot_error: tuple[str, str] = ALLOCATION_FAILED
    spot_refused_at: str = "operation"


@dataclass
class Vm:
    """A VM the emulator holds: its ARM body, its address and its process group once booted."""

    id: str
    group: str
    body: dict[str, Any]
    ip: str
    state: str = "Creating"
    booted_at: float = 0.0
    pgid: int | None = None
    workdir: Path | None = None


@dataclass
class Operation:
    """An async operation: its status and when it completes (and what happens then)."""

    status: str = "InProgress"
    due: float = 0.0
    fail: bool = False
    done: Any = None
    error: dict[str, Any] = field(default_factory=dict)
    #: the error the operation fails with (None: InternalExecutionError)
    fail_with: tuple[str, str] | None = None


def _throwaway_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a 127.0.0.1 server certificate signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arm-emulator test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


#: How ARM names the regional quotas (the families': "<family> vCPUs" here).
_LOCALIZED = {"cores": "Total Regional vCPUs", "lowPriorityCores": "Total Regional Low-priority vCPUs"}


def _spot_invalid(props: dict[str, Any]) -> str | None:
    """ARM's validation of a VM's priority, eviction policy and max price: the message of its 400, or None."""
    priority = props.get("priority", "Regular")
    if priority not in ("Regular", "Low", "Spot"):
        return f"The value '{priority}' of parameter 'priority' is not allowed."
    eviction, billing = props.get("evictionPolicy"), props.get("billingProfile")
    if priority == "Regular" and (eviction or billing):
        return "Eviction policy and max price can be set only for Spot/Low priority virtual machines."
    if priority != "Regular":
        if eviction not in ("Delete", "Deallocate"):
            return "Eviction policy must be specified for Spot virtual machines ('Delete' or 'Deallocate')."
        price = (billing or {}).get("maxPrice", -1)
        if not isinstance(price, (int, float)) or (price != -1 and price <= 0):
            return f"The max price {price} is not valid: use -1 or a price greater than zero."
    return None


def _identity_invalid(identity: Any) -> str | None:
    """ARM's validation of a VM's ``identity``: the message of its 400, or None."""
    if not identity:
        return None
    kind = identity.get("type")
    if kind not in ("None", "SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned"):
        return f"The value '{kind}' of parameter 'identity.type' is not allowed."
    ids = identity.get("userAssignedIdentities") or {}
    if "UserAssigned" in kind and not ids:
        return "The 'userAssignedIdentities' property is required with identity type 'UserAssigned'."
    for uid in ids:
        if not _IDENTITY.fullmatch(uid):
            return (f"Resource '{uid}' is not a valid user assigned identity resource id: expected /subscriptions/"
                    "{id}/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}.")
    return None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class ArmEmulator:
    """ARM on loopback; ``start()`` serves, ``close()`` kills every VM's processes."""

    def __init__(self, *, boot_seconds: float = 0.3, delete_seconds: float = 0.2) -> None:
        self.boot_seconds = boot_seconds
        self.delete_seconds = delete_seconds
        self.token = "arm-emulator-" + uuid.uuid4().hex
        self.faults = Faults()
        self.skus = dict(SKUS)
        #: vCPU limits by usage name (a VM family, or "cores"); usage is what the emulator's VMs take
        self.quotas = dict(QUOTAS)
        #: (method, resource type, api-version) of every call, in order
        self.calls: list[tuple[str, str, str]] = []
        self.groups: dict[str, dict[str, Any]] = {}  # lower name -> group JSON
        self.resources: dict[str, dict[str, Any]] = {}  # lower id -> network resource JSON
        self.vms: dict[str, Vm] = {}  # lower id -> Vm
        self.operations: dict[str, Operation] = {}
        self._lock = threading.RLock()
        self._net = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"
        self._next_host = 2
        self._root = Path(tempfile.mkdtemp(prefix="arm-emulator-"))
        self._ca, cert, key = _throwaway_tls(self._root)
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pgids: set[int] = set()  # every VM's process group, ever
        #: each VM's metadata service (its name, Scheduled Events): cumulo.azure.metadata-endpoint
        self.metadata = MetadataEmulator(who=self._vm_of_group)
        self.evictions: dict[str, float] = {}  # lower VM id -> when Azure takes it back

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def cumulo_config(self) -> dict[str, str]:
        """cumulo.azure.* pointing at the emulator: its ARM endpoint, and the bearer token read from
        AZURE_ACCESS_TOKEN (``credential: static-token``, as ``az account get-access-token`` gives one)."""
        return {"cumulo.azure.arm-endpoint": self.endpoint, "cumulo.azure.credential": "static-token"}

    def env(self) -> dict[str, str]:
        """What a process needs to reach the emulator: the token, the subscription, and trust in its CA."""
        return {"AZURE_ACCESS_TOKEN": self.token, "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
                "REQUESTS_CA_BUNDLE": str(self._ca)}

    def start(self) -> ArmEmulator:
        emu = self

        class Handler(_Handler):
            pass

        Handler.emu = emu
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        self.metadata.start()
        for target in (self._server.serve_forever, self._run_loop):
            t = threading.Thread(target=target, daemon=True, name=f"arm-emulator-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        """Stop serving and kill every VM's processes."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(10)
        self.metadata.close()
        with self._lock:
            vms = list(self.vms.values())
        _kill(*vms)
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what tests look at --------------------------------------------------------------------

    def live(self) -> list[Vm]:
        """VMs that exist (what would bill)."""
        with self._lock:
            return list(self.vms.values())

    def cumulo_groups(self) -> list[str]:
        with self._lock:
            return sorted(g["name"] for g in self.groups.values() if g["name"].startswith("cumulo-"))

    def running_process_groups(self) -> list[int]:
        with self._lock:
            groups = set(self._pgids)
        return sorted(groups & _live_groups()) if groups else []

    def wait_idle(self, timeout: float = 15.0) -> bool:
        """Wait (bounded) until no VM and no group of cumulo's exists and no VM process runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.live() and not self.cumulo_groups() and not self.running_process_groups():
                return True
            time.sleep(0.05)
        return False

    def preempt(self, vm_id: str, *, in_seconds: float = 30.0, notice: bool = True) -> float:
        """Evict a Spot VM as Azure does: a Preempt Scheduled Event now, the VM deleted ``in_seconds`` later (about
        30 s on Azure). ``notice=False``: no event (one the VM never saw). Returns when."""
        at = time.time() + in_seconds
        with self._lock:
            vm = self.vms[vm_id.lower()]
            assert vm.body["properties"].get("priority") == "Spot", "Azure evicts Spot VMs only"
            self.evictions[vm_id.lower()] = at
            name = vm.body["name"]
        if notice:
            self.metadata.preempt(name, at)
        return at

    def _vm_of_group(self, pgid: int) -> str | None:
        with self._lock:
            return next((v.body["name"] for v in self.vms.values() if v.pgid == pgid), None)

    def add_group(self, name: str, location: str = "eastus") -> str:
        """A resource group cumulo did not create (no tags): its id."""
        with self._lock:
            self.groups.setdefault(name.lower(), {"id": self._group_id(name), "name": name, "location": location,
                                                  "type": "Microsoft.Resources/resourceGroups", "tags": {},
                                                  "properties": {"provisioningState": "Succeeded"}})
        return self._group_id(name)

    def add_foreign(self, group: str, rtype: str, name: str, properties: dict[str, Any] | None = None) -> str:
        """A resource cumulo did not create (``rtype`` e.g. Microsoft.Network/networkSecurityGroups or
        Microsoft.Compute/disks), untagged, in an existing group: its id."""
        rid = self._rid(group, rtype, name)
        with self._lock:
            self.resources[rid.lower()] = {"id": rid, "name": name, "type": rtype, "location": "eastus", "tags": {},
                                           "properties": {"provisioningState": "Succeeded", **(properties or {})}}
        return rid

    def in_group(self, group: str) -> list[str]:
        """The ids of every resource and VM in ``group``."""
        prefix = self._group_id(group).lower() + "/"
        with self._lock:
            return sorted([r["id"] for k, r in self.resources.items() if k.startswith(prefix)]
                          + [v.id for k, v in self.vms.items() if k.startswith(prefix)])

    def add_foreign_vm(self, group: str, name: str, tags: dict[str, str] | None = None) -> str:
        """A VM cumulo did not create (its group too), not booted: its id."""
        with self._lock:
            self.groups.setdefault(group.lower(), {"id": self._group_id(group), "name": group, "location": "eastus",
                                                   "tags": {}, "properties": {"provisioningState": "Succeeded"}})
            vid = self._rid(group, "Microsoft.Compute/virtualMachines", name)
            body = {"location": "eastus", "tags": tags or {},
                    "properties": {"hardwareProfile": {"vmSize": "Standard_D2s_v5"}}}
            vm = Vm(vid, group.lower(), self._vm_json(vid, name, body, "Succeeded"), self._address(), state="Succeeded")
            vm.booted_at = -1.0  # never boots
            self.vms[vid.lower()] = vm
        return vid

    # -- helpers -----------------------------------------------------------------------------

    def _address(self) -> str:
        with self._lock:
            n = self._next_host
            self._next_host += 1
        return f"{self._net}.{n}"

    def _group_id(self, group: str) -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"

    def _rid(self, group: str, rtype: str, name: str) -> str:
        return f"{self._group_id(group)}/providers/{rtype}/{name}"

    def _operation(self, location: str, *, seconds: float, fail: bool = False, done: Any = None,
                   fail_with: tuple[str, str] | None = None, network: bool = False) -> str:
        op = uuid.uuid4().hex
        with self._lock:
            self.operations[op] = Operation(due=time.monotonic() + seconds, fail=fail, done=done, fail_with=fail_with)
        ns, version = (("Microsoft.Network", API_VERSIONS["microsoft.network"]) if network
                       else ("Microsoft.Compute", API_VERSIONS["microsoft.compute/locations"]))
        return (f"{self.endpoint}/subscriptions/{SUBSCRIPTION}/providers/{ns}/locations/{location}/"
                f"operations/{op}?api-version={version}")

    def _vm_json(self, vid: str, name: str, body: dict[str, Any], state: str) -> dict[str, Any]:
        props = json.loads(json.dumps(body.get("properties", {})))
        props.get("osProfile", {}).pop("customData", None)  # ARM never returns customData
        props["provisioningState"] = state
        props["vmId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, vid))
        answer = {"id": vid, "name": name, "type": "Microsoft.Compute/virtualMachines",
                  "location": body.get("location"), "tags": body.get("tags") or {}, "properties": props}
        if body.get("identity"):
            identity = body["identity"]
            answer["identity"] = {"type": identity.get("type"), "userAssignedIdentities": {
                uid: {"principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, uid.lower() + "/principal")),
                      "clientId": str(uuid.uuid5(uuid.NAMESPACE_URL, uid.lower() + "/client"))}
                for uid in identity.get("userAssignedIdentities") or {}}}
        return answer

    # -- the runner ----------------------------------------------------------------------------

    def _run_loop(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            with self._lock:
                due = [(k, o) for k, o in self.operations.items() if o.status == "InProgress" and o.due <= now]
            for _, op in due:  # what the operation does happens before a poll can see it done
                if op.done is not None:
                    op.done("Failed" if op.fail else "Succeeded")
                with self._lock:
                    if op.fail:
                        code, message = op.fail_with or ("InternalExecutionError",
                                                         "An internal execution error occurred. Please retry later.")
                        op.error = {"code": code, "message": message}
                        op.status = "Failed"
                    else:
                        op.status = "Succeeded"
            with self._lock:
                evicted = [k for k, at in self.evictions.items() if at <= time.time()]
                for key in evicted:
                    del self.evictions[key]
            for key in evicted:  # eviction policy Delete: the VM goes, with its disk and NIC
                vm = self.vms.get(key)
                if vm is not None:
                    self.metadata.done(vm.body["name"])
                    self._delete_vm(key)
            with self._lock:
                booting = [v for v in self.vms.values() if v.state == "Succeeded" and v.pgid is None
                           and v.workdir is None and v.booted_at >= 0]
            for vm in booting:
                self._boot(vm)

    def _boot(self, vm: Vm) -> None:
        vm.workdir = self._root / uuid.uuid4().hex
        vm.workdir.mkdir(mode=0o700)
        script = vm.workdir / "custom_data.sh"
        script.write_bytes(base64.b64decode(vm.body.get("properties", {}).get("osProfile", {}).get("customData", "")))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_") and k != "REQUESTS_CA_BUNDLE"}
        env.update({"CUMULO_ROOT": str(vm.workdir), "CUMULO_BIND_HOST": vm.ip, "CUMULO_DASHBOARD_PORT": "0",
                    "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")})
        # a watchdog in the VM's group kills it if the test process dies (even by SIGKILL)
        launcher = (f"( while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.5; done; kill -KILL 0 ) & "
                    f"exec bash {shlex.quote(str(script))}")
        proc = subprocess.Popen(["bash", "-c", launcher], cwd=vm.workdir, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with self._lock:
            vm.pgid = proc.pid
            self._pgids.add(proc.pid)
            if vm.id.lower() not in self.vms:  # deleted while it was starting
                _kill(vm)
        threading.Thread(target=proc.wait, daemon=True).start()

    def _delete_vm(self, key: str) -> None:
        with self._lock:
            vm = self.vms.pop(key, None)
            if vm is None:
                return
            for nic in vm.body.get("properties", {}).get("networkProfile", {}).get("networkInterfaces", []):
                nic_id = str(nic.get("id", "")).lower()
                if nic.get("properties", {}).get("deleteOption") == "Delete":
                    self.resources.pop(nic_id, None)
                elif nic_id in self.resources:
                    self.resources[nic_id]["properties"].pop("virtualMachine", None)
            os_disk = vm.body.get("properties", {}).get("storageProfile", {}).get("osDisk", {})
            disk_id = self._disk_id(vm)
            if os_disk.get("deleteOption") == "Delete":
                self.resources.pop(disk_id, None)
            elif disk_id in self.resources:
                self.resources[disk_id].pop("managedBy", None)
        _kill(vm)

    @staticmethod
    def _disk_name(vm: Vm) -> str:
        """The name of a VM's OS disk: its osDisk's, else ARM's way."""
        return str(vm.body.get("properties", {}).get("storageProfile", {}).get("osDisk", {}).get("name")
                   or f"{vm.body.get('name')}_OsDisk_1")

    def _disk_id(self, vm: Vm) -> str:
        """The lower-case id of a VM's OS disk."""
        return self._rid(vm.group, "Microsoft.Compute/disks", self._disk_name(vm)).lower()

    def _delete_group(self, name: str) -> None:
        with self._lock:
            prefix = self._group_id(name).lower() + "/"
            for key in [k for k, v in self.vms.items() if v.id.lower().startswith(prefix)]:
                self._delete_vm(key)
            for key in [k for k in self.resources if k.startswith(prefix)]:
                del self.resources[key]
            self.groups.pop(name.lower(), None)

    # -- requests --------------------------------------------------------------------------------

    def handle(self, method: str, url: str, auth: str | None, body: Any) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(url)
        query = {k.lower(): v[0] for k, v in parse_qs(parts.query).items()}
        segs = [s for s in parts.path.split("/") if s]
        low = [s.lower() for s in segs]
        rtype = self._type_of(low)
        with self._lock:
            self.calls.append((method, rtype, query.get("api-version", "")))
        if auth != f"Bearer {self.token}":
            return 401, _error("InvalidAuthenticationToken", "The access token is invalid."), {
                "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                                    'error="invalid_token", error_description="The access token is invalid."'}
        with self._lock:
            if self.faults.throttle > 0:
                self.faults.throttle -= 1
                return 429, _error("TooManyRequests", "The request is being throttled."), {
                    "Retry-After": str(self.faults.retry_after)}
        if len(low) < 2 or low[0] != "subscriptions" or segs[1] != SUBSCRIPTION:
            return 404, _error("SubscriptionNotFound", f"The subscription '{segs[1] if len(segs) > 1 else ''}' "
                               "could not be found."), {}
        want = API_VERSIONS.get(rtype)
        if want is None:
            return 404, _error("InvalidResourceType", f"The resource type '{rtype}' could not be found."), {}
        if query.get("api-version") != want:
            return 400, _error("InvalidApiVersionParameter", f"The api-version '{query.get('api-version')}' is "
                               f"invalid. The supported versions are '{want}'."), {}
        return self._route(method, segs, low, query, body)

    @staticmethod
    def _type_of(low: list[str]) -> str:
        if "providers" in low:
            i = len(low) - 1 - low[::-1].index("providers")
            ns = low[i + 1] if len(low) > i + 1 else ""
            if ns == "microsoft.network":
                return ns
            kind = low[i + 2] if len(low) > i + 2 else ""
            if ns == "microsoft.compute" and kind == "locations":
                return "microsoft.compute/locations"
            return f"{ns}/{kind}"
        if len(low) >= 3 and low[2] == "operationresults":
            return "operationresults"
        if len(low) >= 3 and low[2] == "resourcegroups":
            return "resourcegroups"
        return "/".join(low[2:3])

    def _route(self, method: str, segs: list[str], low: list[str], query: dict[str, str],
               body: Any) -> tuple[int, Any, dict[str, str]]:
        n = len(low)
        # /subscriptions/{s}/operationresults/{op}: a group delete's Location
        if low[2] == "operationresults" and n == 4:
            return self._poll_location(segs[3])
        if low[2] == "providers":  # subscription-wide lists and operations
            if low[3:5] == ["microsoft.compute", "skus"]:
                return 200, {"value": self._skus(query.get("$filter", ""))}, {}
            if low[3:5] == ["microsoft.compute", "virtualmachines"] and method == "GET":
                with self._lock:
                    return 200, {"value": [v.body for v in self.vms.values()]}, {}
            if low[3] in ("microsoft.compute", "microsoft.network") and low[4] == "locations" and n == 8 \
                    and low[6] == "operations":
                return self._poll_operation(segs[7])
            if low[3:5] == ["microsoft.compute", "disks"] and n == 5 and method == "GET":
                with self._lock:
                    return 200, {"value": [r for r in self.resources.values()
                                           if r["type"].lower() == "microsoft.compute/disks"]}, {}
            if low[3] == "microsoft.compute" and low[4] == "locations" and n == 7 and low[6] == "usages":
                return 200, {"value": self._usages(low[5])}, {}
            if low[3] == "microsoft.network" and n == 5 and method == "GET":
                with self._lock:
                    kind = low[4]
                    return 200, {"value": [r for r in self.resources.values() if r["type"].lower()
                                           == f"microsoft.network/{kind}"]}, {}
            return 404, _error("InvalidResourceType", "not emulated"), {}
        # /subscriptions/{s}/resourcegroups[/{rg}[/providers/...]]
        if n == 3:
            return self._list_groups(query.get("$filter", ""))
        group = segs[3]
        if n == 4:
            return self._group(method, group, body)
        if n >= 8 and low[4] == "providers":
            if group.lower() not in self.groups:
                return 404, _error("ResourceGroupNotFound", f"Resource group '{group}' could not be found."), {}
            rtype, name = f"{segs[5]}/{segs[6]}", segs[7]
            if low[5] == "microsoft.compute" and low[6] == "virtualmachines":
                return self._vm(method, group, name, low[8:], query, body)
            if low[5] == "microsoft.compute" and low[6] == "disks" and n == 8:
                return self._disk(method, group, name)
            if low[5] == "microsoft.network":
                return self._network(method, group, rtype, name, body)
        return 404, _error("InvalidResourceType", "not emulated"), {}

    def _skus(self, filter_: str) -> list[dict[str, Any]]:
        where = filter_.split("'")[1].lower() if "'" in filter_ else None
        return [{"resourceType": "virtualMachines", "name": size, "tier": "Standard", "family": family,
                 "locations": [loc], "restrictions": [],
                 "capabilities": [{"name": "vCPUs", "value": str(vcpus)}]}
                for size, (family, vcpus, locs) in self.skus.items() for loc in locs
                if where is None or loc.lower() == where]

    def _usages(self, location: str) -> list[dict[str, Any]]:
        """Compute usages of a location: each quota's limit and what the emulator's VMs there take."""
        used: dict[str, int] = dict.fromkeys(self.quotas, 0)
        with self._lock:
            for vm in self.vms.values():
                if str(vm.body.get("location", "")).lower() != location:
                    continue
                size = vm.body.get("properties", {}).get("hardwareProfile", {}).get("vmSize", "")
                family, vcpus, _ = self.skus.get(size, ("", 0, []))
                spot = vm.body.get("properties", {}).get("priority") in ("Spot", "Low")
                for name in (["lowPriorityCores"] if spot else [family, "cores"]):
                    if name in used:
                        used[name] += vcpus
        return [{"unit": "Count", "currentValue": used[name], "limit": limit,
                 "name": {"value": name, "localizedValue": _LOCALIZED.get(name, f"{name} vCPUs")}}
                for name, limit in self.quotas.items()]

    def _list_groups(self, filter_: str) -> tuple[int, Any, dict[str, str]]:
        tag = filter_.split("'")[1] if filter_.startswith("tagName eq '") else None
        with self._lock:
            found = [g for g in self.groups.values() if tag is None or tag in (g.get("tags") or {})]
        return 200, {"value": found}, {}

    def _group(self, method: str, name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        key = name.lower()
        with self._lock:
            found = self.groups.get(key)
            if method == "HEAD":
                return (204 if found else 404), None, {}
            if method == "GET":
                if found is None:
                    return 404, _error("ResourceGroupNotFound", f"Resource group '{name}' could not be found."), {}
                return 200, found, {}
            if method == "PUT":
                group = {"id": self._group_id(name), "name": name, "type": "Microsoft.Resources/resourceGroups",
                         "location": body.get("location"), "tags": body.get("tags") or {},
                         "properties": {"provisioningState": "Succeeded"}}
                self.groups[key] = group
                return (200 if found else 201), group, {}
            if method == "DELETE":
                if found is None:
                    return 404, _error("ResourceGroupNotFound", f"Resource group '{name}' could not be found."), {}
                if self.faults.delete_failures > 0:
                    self.faults.delete_failures -= 1
                    return 500, _error("InternalServerError", "Encountered internal server error."), {}
                found["properties"]["provisioningState"] = "Deleting"
                op = uuid.uuid4().hex
                self.operations[op] = Operation(due=time.monotonic() + self.delete_seconds,
                                                done=lambda status, n=name: self._delete_group(n))
                location = (f"{self.endpoint}/subscriptions/{SUBSCRIPTION}/operationresults/{op}"
                            f"?api-version={API_VERSIONS['operationresults']}")
                return 202, None, {"Location": location, "Retry-After": "0"}
        return 405, _error("MethodNotAllowed", method), {}

    def _poll_location(self, op_id: str) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            op = self.operations.get(op_id)
        if op is None:
            return 404, _error("NotFound", "no such operation"), {}
        if op.status == "InProgress":
            return 202, None, {"Retry-After": "0"}
        if op.status == "Failed":
            return 500, {"error": op.error}, {}
        return 200, None, {}

    def _poll_operation(self, op_id: str) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            op = self.operations.get(op_id)
        if op is None:
            return 404, _error("NotFound", "no such operation"), {}
        answer: dict[str, Any] = {"name": op_id, "status": op.status}
        if op.status == "Failed":
            answer["error"] = op.error
        return 200, answer, {}

    def _network(self, method: str, group: str, rtype: str, name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        rid = self._rid(group, rtype, name)
        key = rid.lower()
        with self._lock:
            found = self.resources.get(key)
            if method == "GET":
                if found is None:
                    return 404, _error("ResourceNotFound", f"The Resource '{rtype}/{name}' under resource group "
                                       f"'{group}' was not found."), {}
                return 200, found, {}
            if method == "DELETE":
                if found is None:
                    return 204, None, {}
                in_use = self._in_use(found)
                if in_use:
                    return 400, _error(*in_use), {}
                found["properties"]["provisioningState"] = "Deleting"
                op = self._operation(found.get("location") or "eastus", seconds=self.delete_seconds, network=True,
                                     done=lambda status, k=key: self._forget(k))
                return 202, None, {"Azure-AsyncOperation": op, "Location": op}
            if method != "PUT":
                return 405, _error("MethodNotAllowed", method), {}
            props = json.loads(json.dumps(body.get("properties") or {}))
            props["provisioningState"] = "Succeeded"
            kind = rtype.split("/")[1].lower()
            if kind == "virtualnetworks":
                for sub in props.get("subnets", []):
                    sub["id"] = f"{rid}/subnets/{sub['name']}"
                    sub.setdefault("properties", {})["provisioningState"] = "Succeeded"
            elif kind == "networkinterfaces":
                ip = found["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] if found \
                    else self._address()
                for conf in props.get("ipConfigurations", []):
                    conf["id"] = f"{rid}/ipConfigurations/{conf['name']}"
                    cprops = conf.setdefault("properties", {})
                    cprops["privateIPAddress"] = ip
                    pip = str((cprops.get("publicIPAddress") or {}).get("id", "")).lower()
                    if pip in self.resources:
                        self.resources[pip]["properties"]["ipAddress"] = ip
                if found and "virtualMachine" in found["properties"]:
                    props["virtualMachine"] = found["properties"]["virtualMachine"]
            elif kind == "networksecuritygroups":
                for rule in props.get("securityRules", []):
                    rule["id"] = f"{rid}/securityRules/{rule['name']}"
            resource = {"id": rid, "name": name, "type": rtype, "location": body.get("location"),
                        "tags": body.get("tags") or {}, "properties": props}
            if "sku" in body:
                resource["sku"] = body["sku"]
            self.resources[key] = resource
            return (200 if found else 201), resource, {}

    def _forget(self, key: str) -> None:
        with self._lock:
            self.resources.pop(key, None)

    def _in_use(self, res: dict[str, Any]) -> tuple[str, str] | None:
        """ARM's refusal to delete a network resource something still uses: (code, message), or None."""
        rid, kind = str(res["id"]), str(res["type"]).split("/")[-1].lower()
        low = rid.lower()
        props = res["properties"]
        if kind == "networkinterfaces" and "virtualMachine" in props:
            return "NicInUse", f"Network Interface {rid} is used by existing resource {props['virtualMachine']['id']}."
        nics = [r for r in self.resources.values() if r["type"].lower() == "microsoft.network/networkinterfaces"]
        confs = [c.get("properties", {}) for nic in nics for c in nic["properties"].get("ipConfigurations", [])]
        if kind == "publicipaddresses" and any(str((c.get("publicIPAddress") or {}).get("id", "")).lower() == low
                                               for c in confs):
            return "PublicIPAddressCannotBeDeleted", f"Public IP address {rid} can not be deleted since it is still " \
                                                     "allocated to a resource."
        if kind == "virtualnetworks" and any(str((c.get("subnet") or {}).get("id", "")).lower().startswith(
                low + "/subnets/") for c in confs):
            return "InUseSubnetCannotBeDeleted", f"Subnet of {rid} is in use by a network interface and cannot be " \
                                                 "deleted."
        if kind == "networksecuritygroups":
            vnets = [r for r in self.resources.values() if r["type"].lower() == "microsoft.network/virtualnetworks"]
            held = [str((s.get("properties", {}).get("networkSecurityGroup") or {}).get("id", "")).lower()
                    for v in vnets for s in v["properties"].get("subnets", [])]
            held += [str((nic["properties"].get("networkSecurityGroup") or {}).get("id", "")).lower() for nic in nics]
            if low in held:
                return "InUseNetworkSecurityGroupCannotBeDeleted", f"Network security group {rid} cannot be " \
                                                                   "deleted because it is in use."
        return None

    def _disk(self, method: str, group: str, name: str) -> tuple[int, Any, dict[str, str]]:
        rid = self._rid(group, "Microsoft.Compute/disks", name)
        key = rid.lower()
        with self._lock:
            found = self.resources.get(key)
            if method == "GET":
                if found is None:
                    return 404, _error("ResourceNotFound", f"The Resource 'Microsoft.Compute/disks/{name}' under "
                                       f"resource group '{group}' was not found."), {}
                return 200, found, {}
            if method == "DELETE":
                if found is None:
                    return 204, None, {}
                if found.get("managedBy"):
                    return 409, _error("OperationNotAllowed", f"Disk {name} is attached to VM "
                                       f"{found['managedBy']}."), {}
                op = self._operation(found.get("location") or "eastus", seconds=self.delete_seconds,
                                     done=lambda status, k=key: self._forget(k))
                return 202, None, {"Azure-AsyncOperation": op, "Location": op}
        return 405, _error("MethodNotAllowed", method), {}

    def _vm(self, method: str, group: str, name: str, rest: list[str], query: dict[str, str],
            body: Any) -> tuple[int, Any, dict[str, str]]:
        rid = self._rid(group, "Microsoft.Compute/virtualMachines", name)
        key = rid.lower()
        with self._lock:
            vm = self.vms.get(key)
            if method == "GET":
                if vm is None:
                    return 404, _error("ResourceNotFound", f"The Resource 'Microsoft.Compute/virtualMachines/{name}' "
                                       f"under resource group '{group}' was not found."), {}
                view = self._instance_view(vm)
                if rest == ["instanceview"]:
                    return 200, view, {}
                answer = json.loads(json.dumps(vm.body))
                if query.get("$expand") == "instanceView":
                    answer["properties"]["instanceView"] = view
                return 200, answer, {}
            if method == "PUT":
                if vm is not None:
                    return 409, _error("OperationNotAllowed", "The VM exists; this emulator does not update VMs."), {}
                invalid = _spot_invalid(body.get("properties") or {}) or _identity_invalid(body.get("identity"))
                if invalid:
                    return 400, _error("InvalidParameter", invalid), {}
                spot = body["properties"].get("priority") in ("Spot", "Low")
                refuse = spot and self.faults.spot_refused > 0
                if refuse:
                    self.faults.spot_refused -= 1
                    if self.faults.spot_refused_at == "put":
                        return 409, _error(*self.faults.spot_error), {}
                nic = body["properties"]["networkProfile"]["networkInterfaces"][0]["id"].lower()
                if nic not in self.resources:
                    return 400, _error("InvalidParameter", f"The network interface {nic} was not found."), {}
                nic_res = self.resources[nic]
                nic_res["properties"]["virtualMachine"] = {"id": rid}
                ip = nic_res["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
                vm = Vm(rid, group.lower(), {}, ip)
                vm.body = self._vm_json(rid, name, body, "Creating")
                vm.body["properties"]["osProfile"]["customData"] = body["properties"]["osProfile"].get("customData", "")
                self.vms[key] = vm
                disk = self._disk_name(vm)  # the OS disk, held by the VM
                self.resources[self._disk_id(vm)] = {
                    "id": self._rid(group, "Microsoft.Compute/disks", disk), "name": disk,
                    "type": "Microsoft.Compute/disks", "location": body.get("location"), "tags": {}, "managedBy": rid,
                    "properties": {"provisioningState": "Succeeded", "diskState": "Attached"}}
                fail = self.faults.fail_after_accept > 0 or refuse
                if fail and not refuse:
                    self.faults.fail_after_accept -= 1

                def done(status: str, vm: Vm = vm) -> None:
                    with self._lock:
                        vm.state = "Succeeded" if status == "Succeeded" else "Failed"
                        vm.body["properties"]["provisioningState"] = vm.state

                async_op = self._operation(body.get("location") or "eastus", seconds=self.boot_seconds, fail=fail,
                                           done=done, fail_with=self.faults.spot_error if refuse else None)
                answer = json.loads(json.dumps(vm.body))
                answer["properties"]["osProfile"].pop("customData", None)
                return 201, answer, {"Azure-AsyncOperation": async_op}
            if method == "DELETE":
                if vm is None:
                    return 204, None, {}
                if self.faults.delete_failures > 0:
                    self.faults.delete_failures -= 1
                    return 500, _error("InternalServerError", "Encountered internal server error."), {}
                vm.state = "Deleting"
                vm.body["properties"]["provisioningState"] = "Deleting"
                async_op = self._operation(vm.body.get("location") or "eastus", seconds=self.delete_seconds,
                                           done=lambda status, k=key: self._delete_vm(k))
                return 202, None, {"Azure-AsyncOperation": async_op, "Location": async_op}
        return 405, _error("MethodNotAllowed", method), {}

    @staticmethod
    def _instance_view(vm: Vm) -> dict[str, Any]:
        statuses = [{"code": f"ProvisioningState/{vm.state.lower()}", "level": "Info"}]
        if vm.state == "Succeeded":
            statuses.append({"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"})
        elif vm.state == "Creating":
            statuses.append({"code": "PowerState/starting", "level": "Info", "displayStatus": "VM starting"})
        return {"statuses": statuses}


def _kill(*vms: Vm) -> None:
    groups = {v.pgid for v in vms if v.pgid is not None}
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while groups and groups & _live_groups() and time.monotonic() < deadline:
        time.sleep(0.02)


class _Handler(BaseHTTPRequestHandler):
    emu: ArmEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status, answer, headers = self.emu.handle(method, self.path, self.headers.get("Authorization"), body)
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for k, v in headers.items():
            self.send_header(k, v)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and method != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_PATCH(self) -> None:
        self._serve("PATCH")
