"""The validated cluster request: what the user asked for, checked before anything starts.

A ClusterSpec is plain data (JSON-serialisable, no secrets) so that it can be
stored in the registry, sent by the JupyterLab extension, and compared when a
cluster is re-attached. Every check raises SpecError with a message that names
the field and shows a valid form.

``spec_arguments`` reads connect()'s keyword arguments into spec fields: dask's own names
(``n_workers``) are accepted where they mean the same, anything else unknown is refused with
the nearest accepted name (``did_you_mean``, shared with the other "unknown X" messages).

Beside it live the address helpers the providers' preflights use (parse_address,
probe_loopback: a refused loopback port fails at once instead of after the connect
timeout) and duration_seconds, the one reading of durations shared with cumulo.config.
"""

from __future__ import annotations

import dataclasses
import math
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dask.utils import parse_bytes

from .config import duration_seconds
from .exceptions import ConnectError, SpecError, did_you_mean

__all__ = [
    "DASK_ALIASES",
    "MAX_WORKERS",
    "ClusterSpec",
    "did_you_mean",
    "duration_seconds",
    "is_loopback_host",
    "parse_address",
    "probe_loopback",
    "spec_arguments",
    "validate_name",
]

#: Upper bound on workers in one request; above this is almost surely a typo.
MAX_WORKERS = 1024
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SCHEMES = ("tcp", "tls", "inproc", "ws", "wss", "ucx")
_SECRET_WORDS = ("key", "token", "secret", "password", "credential")
#: Values that are credentials whatever their name: token formats of common services, URLs with a password.
_SECRET_VALUE = re.compile(
    r"\b(?:sk-(?:ant-|proj-|admin-)?[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{30,}|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,})"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")
#: What the registry holds in place of an ``env`` value (see ClusterSpec.stored).
ENV_NOT_STORED = "<not stored: set in the kernel that started the cluster>"
#: dask's own argument names (LocalCluster, SpecCluster) that mean the same as a spec field.
DASK_ALIASES = {"n_workers": "workers"}


def validate_name(name: str) -> str:
    """Check a cluster name: lower-case letters, digits, '-', '_', '.', at most 63 characters."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(
            f"cluster name {name!r} is not valid: use 1-63 lower-case letters, digits, "
            "'-', '_' or '.', starting with a letter or digit (e.g. name='etl-1')"
        )
    return name


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine over loopback (127.0.0.0/8, ::1, localhost)."""
    h = host.strip("[]").lower()
    return h == "localhost" or h == "::1" or h.startswith("127.")


def parse_address(address: str) -> tuple[str, str, int]:
    """Split a scheduler address into (scheme, host, port), or raise SpecError saying what is wrong."""
    if not isinstance(address, str) or "://" not in address:
        raise SpecError(
            f"scheduler address {address!r} is malformed: expected 'tcp://host:port' or 'tls://host:port'"
        )
    parts = urlsplit(address)
    if parts.scheme not in _SCHEMES:
        raise SpecError(
            f"scheduler address {address!r} has scheme {parts.scheme!r}: use one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise SpecError(
            f"scheduler address {address!r} is malformed: expected '{parts.scheme}://host:port' "
            "with a numeric port, e.g. 'tcp://127.0.0.1:8786'"
        )
    return parts.scheme, parts.hostname, port


def probe_loopback(address: str, *, timeout: float = 1.0) -> None:
    """Fail at once when nothing listens at a loopback scheduler address.

    A refused TCP connection on this machine is a definite answer, so it raises
    ConnectError naming the address instead of letting connect() wait out
    ``cumulo.connect.timeout``. Only tcp-based schemes on loopback hosts are probed;
    anything else, and any other outcome (it answered, a timeout), returns quietly and
    leaves the real connection attempt to decide.
    """
    scheme, host, port = parse_address(address)
    if scheme not in ("tcp", "tls", "ws", "wss") or not is_loopback_host(host):
        return
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            return
    except ConnectionRefusedError:
        raise ConnectError(
            f"nothing listens at {address}: the connection was refused. Start the scheduler first "
            f"(e.g. `dask scheduler --host {host} --port {port}`), check the port, or call "
            "cumulo.connect() with no address to start a local cluster"
        ) from None
    except OSError:
        return


def _environment(value: Any) -> str | list[str]:
    """Check ``environment=``: 'sync', 'none', a requirements file path, or a list of requirement strings."""
    from packaging.requirements import InvalidRequirement, Requirement

    if isinstance(value, str):
        value = value.strip()
        if value in ("sync", "none"):
            return value
        if value.endswith(".txt") or "/" in value:
            return value  # a requirements file: read (and its existence checked) when the lock is made
        raise SpecError(f"environment={value!r}: use 'sync', 'none', a requirements file such as "
                        "'requirements.txt', or a list such as ['polars==1.20']")
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        for item in value:
            try:
                Requirement(item)
            except InvalidRequirement as exc:
                raise SpecError(f"environment entry {item!r} is not a requirement ({exc}); write e.g. "
                                "'polars==1.20'") from None
        return [v.strip() for v in value]
    raise SpecError(f"environment={value!r} must be 'sync', 'none', a requirements file or a list of requirements")


def _positive_int(name: str, value: Any, *, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name}={value!r} must be a whole number between 0 and {maximum}")
    if value < 0 or value > maximum:
        raise SpecError(
            f"{name}={value} is out of range: use a number between 0 and {maximum}"
            + (" (a larger cluster is almost surely a typo)" if value > maximum else "")
        )
    return value


def _text(name: str, value: Any, example: str, *, optional: bool = False) -> Any:
    """A non-blank string field, stripped; None passes when ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        what = "is blank" if isinstance(value, str) else f"must be a string, not {type(value).__name__}"
        raise SpecError(f"{name}={value!r} {what}: pass e.g. {name}={example}")
    return value.strip()


@dataclass
class ClusterSpec:
    """What the user asked for. Fields that do not apply to a provider stay None.

    provider: "local", "address", or a registered provider name ("lambda", "gateway", ...).
    address: scheduler address when attaching to a running cluster.
    workers: worker count (processes for local, instances for cloud).
    gpu: GPU model wanted ("A100", "H100"), None for CPU or "whatever the machine has".
    budget: dollars after which the budget action runs; idle_timeout: seconds.
    environment: what remote workers run: "sync" (the notebook's packages, the default where
    a provider installs anything), "none" (the image as it is), a requirements file, or a list
    of requirements such as ["polars==1.20"] (cumulo.envsync). ``env`` is environment variables.
    options: provider-specific extras (plain data, never secrets).
    """

    provider: str = "local"
    name: str | None = None
    address: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | int | None = None
    gpu: str | None = None
    gpus_per_worker: int | None = None
    instance_type: str | None = None
    region: str | None = None
    #: True: spot capacity, falling back to on-demand where the provider can; "only": spot, never on-demand.
    spot: bool | str = False
    budget: float | None = None
    idle_timeout: float | None = None
    image: str | None = None
    environment: str | list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SpecError on the first invalid field; strings are stripped of surrounding blanks."""
        self.provider = _text("provider", self.provider, "'local' or 'lambda'")
        self.gpu = _text("gpu", self.gpu, "'A100' or 'H100' (leave it out for CPU workers)", optional=True)
        self.instance_type = _text("instance_type", self.instance_type, "'gpu_1x_a100'", optional=True)
        self.region = _text("region", self.region, "'us-east-1' (leave it out to pick one)", optional=True)
        self.image = _text("image", self.image, "'ghcr.io/dask/dask:latest'", optional=True)
        if not isinstance(self.spot, bool) and self.spot != "only":
            raise SpecError(f"spot={self.spot!r} must be True, False or 'only' (spot=True asks for spot instances "
                            "and falls back to on-demand; 'only' never falls back)")
        if self.name is not None:
            validate_name(self.name)
        if self.environment is not None:
            self.environment = _environment(self.environment)
        if self.address is not None:
            if not isinstance(self.address, str) or "://" not in self.address:
                parse_address(self.address)  # raises, naming the expected form
            if self.address.split("://", 1)[0] in _SCHEMES:
                parse_address(self.address)
            # other schemes (ssh://, gateway://, a plugin's) name a provider: connect() looks it up, and
            # that provider's preflight reads the target
        if self.workers is not None:
            _positive_int("workers", self.workers, maximum=MAX_WORKERS)
        if self.threads_per_worker is not None:
            _positive_int("threads_per_worker", self.threads_per_worker, maximum=1024)
            if self.threads_per_worker == 0:
                raise SpecError("threads_per_worker=0 leaves workers unable to run tasks: use 1 or more")
        if self.gpus_per_worker is not None:
            _positive_int("gpus_per_worker", self.gpus_per_worker, maximum=16)
        if self.memory_limit is not None and self.memory_limit != "auto":
            limit = self.memory_limit
            try:
                if isinstance(limit, bool):  # int(True) would be a 1-byte limit
                    raise TypeError
                nbytes = parse_bytes(limit) if isinstance(limit, str) else int(limit)
            except (ValueError, TypeError, OverflowError):
                raise SpecError(
                    f"memory_limit={self.memory_limit!r} is not a size: use 'auto', '4GiB' or a number of bytes"
                ) from None
            if nbytes < 0:
                raise SpecError(f"memory_limit={self.memory_limit!r} must not be negative")
        if self.budget is not None:
            # nan compares False with everything and inf is no cap: both would silently mean "no budget"
            if (
                isinstance(self.budget, bool)
                or not isinstance(self.budget, (int, float))
                or not math.isfinite(self.budget)
                or self.budget <= 0
            ):
                raise SpecError(
                    f"budget={self.budget!r} must be a positive number of dollars, e.g. budget=20.0 "
                    "(nan and inf are not amounts); leave it out (budget=None) for no budget"
                )
            self.budget = float(self.budget)
        if self.idle_timeout is not None:
            try:
                seconds = duration_seconds(self.idle_timeout)
            except ValueError as exc:
                raise SpecError(
                    f"idle_timeout={self.idle_timeout!r} {exc}: use e.g. idle_timeout='20m', '1h' or a number "
                    "of seconds; leave it out (idle_timeout=None) to use cumulo.guards.idle-timeout"
                ) from None
            if seconds <= 0:
                raise SpecError(f"idle_timeout={self.idle_timeout!r} must be a positive duration such as '20m'")
            self.idle_timeout = seconds
        if not isinstance(self.options, dict) or not all(isinstance(k, str) for k in self.options):
            raise SpecError("options must be a dict with string keys, e.g. options={'confirm': True}")
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise SpecError("env must be a dict of str to str, e.g. env={'OMP_NUM_THREADS': '1'}")
        # a True/False flag holds no secret, whatever its name (forward_credentials=True)
        for key in list(self.env) + [k for k, v in self.options.items() if not isinstance(v, bool)]:
            if any(word in key.lower() for word in _SECRET_WORDS):
                raise SpecError(
                    f"{key!r} looks like a secret; cluster specs are stored and shown, so pass "
                    "credentials through the provider's credential source (environment, key file, keyring) instead"
                )
        for key, value in self.options.items():
            if isinstance(value, str) and _SECRET_VALUE.search(value):
                raise SpecError(
                    f"the value of option {key!r} looks like a credential (a token, or a URL with a password); "
                    "cluster specs are stored and shown, so pass credentials through the provider's credential "
                    "source (environment, key file, keyring) instead")

    def require_workers(self, why: str = "nothing would run on it") -> None:
        """Refuse workers=0 for a provider where a cluster without workers makes no sense.

        ClusterSpec allows workers=0 (a cluster scaled to zero is a real state); a
        provider's preflight calls this when *starting* with none is a mistake, e.g.
        the local default (every computation would wait forever) or a provider that
        bills the scheduler's own instance. ``why`` ends the message.
        """
        if self.workers == 0:
            raise SpecError(
                f"workers=0 starts a cluster with no workers, and {why}: pass workers=1 or more "
                "(leave it out for the default); scale later with cluster.scale(n) or cluster.adapt()"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data, fields left at None omitted."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, [])}

    def stored(self) -> dict[str, Any]:
        """What the registry keeps of this spec: :meth:`to_dict` with the values of ``env`` left out.

        Environment variables for the workers often carry credentials (a database URL
        with its password, a hub token); the registry is read by every process and
        shown in listings, so it keeps their names only (:data:`ENV_NOT_STORED`).
        """
        data = self.to_dict()
        if "env" in data:
            data["env"] = {name: ENV_NOT_STORED for name in data["env"]}
        return data

    @classmethod
    def field_names(cls) -> list[str]:
        """The spec's fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSpec:
        """Build and validate a spec from plain data (e.g. a JSON body); unknown fields are an error."""
        if not isinstance(data, dict):
            raise SpecError(f"a cluster spec must be a JSON object, not {type(data).__name__}")
        known = set(cls.field_names())
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"unknown cluster spec field(s) {', '.join(unknown)}{did_you_mean(unknown[0], known)}; "
                f"known fields: {', '.join(sorted(known))}"
            )
        return cls(**data)


def spec_arguments(
    arguments: dict[str, Any], *, also: Iterable[str] = (), others_allowed: bool = False
) -> dict[str, Any]:
    """connect()'s keyword arguments as ClusterSpec fields, checked before anything starts.

    dask's own names where they mean the same (``n_workers=2`` is ``workers=2``; see
    DASK_ALIASES; ``threads_per_worker`` and ``memory_limit`` are spec fields already) are
    renamed; giving both spellings is refused. Any other name that is not a field is refused
    with a SpecError naming the nearest accepted argument (fields, aliases and ``also``, the
    caller's own keywords), unless ``others_allowed`` (a provider that takes options of its
    own, such as a dask-gateway's): then it is left for the provider to check. ``provider``
    and ``address`` are always refused: they are connect()'s first argument.
    """
    for key in ("provider", "address"):
        if key in arguments:
            raise SpecError(f"{key}= is not a keyword of connect(): pass the target as its first argument, e.g. "
                            "connect('lambda', gpu='A10') or connect('tls://host:8786')")
    fields = [f for f in ClusterSpec.field_names() if f not in ("provider", "address")]
    out = dict(arguments)
    for alias, name in DASK_ALIASES.items():
        if alias in out:
            if name in out:
                raise SpecError(f"{alias}= and {name}= both given: they mean the same; pass one ({name}=...)")
            out[name] = out.pop(alias)
    unknown = [k for k in out if k not in fields]
    if unknown and not others_allowed:
        accepted = sorted({*fields, *DASK_ALIASES, *also})
        named = ", ".join(f"{k}=" for k in unknown)  # names only: a misplaced value may be a secret
        raise SpecError(
            f"connect() got {'an unknown argument' if len(unknown) == 1 else 'unknown arguments'} {named}"
            f"{did_you_mean(unknown[0], accepted)}; it accepts {', '.join(accepted)}"
        )
    return out
