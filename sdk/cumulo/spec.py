"""The validated cluster request: what the user asked for, checked before anything starts.

A ClusterSpec is plain data (JSON-serialisable, no secrets) so that it can be
stored in the registry, sent by the JupyterLab extension, and compared when a
cluster is re-attached. Every check raises SpecError with a message that names
the field and shows a valid form.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dask.utils import parse_bytes, parse_timedelta

from .exceptions import SpecError

__all__ = ["ClusterSpec", "parse_address", "is_loopback_host", "MAX_WORKERS", "validate_name"]

#: Upper bound on workers in one request; above this is almost surely a typo.
MAX_WORKERS = 1024
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SCHEMES = ("tcp", "tls", "inproc", "ws", "wss", "ucx")
_SECRET_WORDS = ("key", "token", "secret", "password", "credential")


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


def _positive_int(name: str, value: Any, *, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name}={value!r} must be a whole number between 0 and {maximum}")
    if value < 0 or value > maximum:
        raise SpecError(
            f"{name}={value} is out of range: use a number between 0 and {maximum}"
            + (" (a larger cluster is almost surely a typo)" if value > maximum else "")
        )
    return value


@dataclass
class ClusterSpec:
    """What the user asked for. Fields that do not apply to a provider stay None.

    provider: "local", "address", or a registered provider name ("lambda", "gateway", ...).
    address: scheduler address when attaching to a running cluster.
    workers: worker count (processes for local, instances for cloud).
    gpu: GPU model wanted ("A100", "H100"), None for CPU or "whatever the machine has".
    budget: dollars after which the budget action runs; idle_timeout: seconds.
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
    spot: bool = False
    budget: float | None = None
    idle_timeout: float | None = None
    image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SpecError on the first invalid field."""
        if not isinstance(self.provider, str) or not self.provider:
            raise SpecError(f"provider={self.provider!r} must be a provider name such as 'local'")
        if self.name is not None:
            validate_name(self.name)
        if self.address is not None:
            parse_address(self.address)
        if self.workers is not None:
            _positive_int("workers", self.workers, maximum=MAX_WORKERS)
        if self.threads_per_worker is not None:
            _positive_int("threads_per_worker", self.threads_per_worker, maximum=1024)
            if self.threads_per_worker == 0:
                raise SpecError("threads_per_worker=0 leaves workers unable to run tasks: use 1 or more")
        if self.gpus_per_worker is not None:
            _positive_int("gpus_per_worker", self.gpus_per_worker, maximum=16)
        if self.memory_limit is not None and self.memory_limit != "auto":
            try:
                nbytes = parse_bytes(self.memory_limit) if isinstance(self.memory_limit, str) else int(self.memory_limit)
            except (ValueError, TypeError):
                raise SpecError(
                    f"memory_limit={self.memory_limit!r} is not a size: use 'auto', '4GiB' or a number of bytes"
                ) from None
            if nbytes < 0:
                raise SpecError(f"memory_limit={self.memory_limit!r} must not be negative")
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or self.budget <= 0:
                raise SpecError(f"budget={self.budget!r} must be a positive number of dollars, e.g. budget=20.0")
            self.budget = float(self.budget)
        if self.idle_timeout is not None:
            try:
                seconds = parse_timedelta(self.idle_timeout)
            except (ValueError, KeyError, TypeError):
                raise SpecError(
                    f"idle_timeout={self.idle_timeout!r} is not a duration: use e.g. '20m', '1h' or seconds"
                ) from None
            if seconds is None or seconds <= 0:
                raise SpecError(f"idle_timeout={self.idle_timeout!r} must be a positive duration such as '20m'")
            self.idle_timeout = float(seconds)
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise SpecError("env must be a dict of str to str, e.g. env={'OMP_NUM_THREADS': '1'}")
        for key in list(self.env) + list(self.options):
            if any(word in key.lower() for word in _SECRET_WORDS):
                raise SpecError(
                    f"{key!r} looks like a secret; cluster specs are stored and shown, so pass "
                    "credentials through the provider's credential source (environment, key file, keyring) instead"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data, fields left at None omitted."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, [])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSpec:
        """Build and validate a spec from plain data (e.g. a JSON body); unknown fields are an error."""
        if not isinstance(data, dict):
            raise SpecError(f"a cluster spec must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"unknown cluster spec field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        return cls(**data)
