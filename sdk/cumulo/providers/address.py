"""A scheduler that is already running somewhere: cumulo attaches, it does not own it.

Only the address is checked here: a plain ``tcp://`` address must be on
loopback unless the user explicitly allowed otherwise, because a Dask scheduler
runs whatever pickled code it is sent. ``tls://`` needs client certificates.
Closing such a cluster disconnects; the scheduler keeps running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distributed.security import Security

from .. import config
from ..exceptions import InsecureAddress, SpecError
from ..life.registry import ClusterRecord
from ..spec import ClusterSpec, is_loopback_host, parse_address
from .base import Deployment, Provider

if TYPE_CHECKING:
    from ..life.checkpoint import Checkpoint

__all__ = ["AddressProvider", "security_from"]


def security_from(value: Security | dict[str, str] | None) -> Security | None:
    """A Security from an argument ({'ca_file', 'cert', 'key'} or a Security) or the cumulo.tls.* config."""
    if isinstance(value, Security):
        return value
    if value is not None and not isinstance(value, dict):
        raise SpecError("security must be a distributed.Security or a dict with ca_file, cert and key")
    files = dict(value or {})
    if not files:
        files = {k: config.get(f"tls.{c}") for k, c in (("ca_file", "ca-file"), ("cert", "cert"), ("key", "key"))}
        if not any(files.values()):
            return None
    unknown = set(files) - {"ca_file", "cert", "key"}
    if unknown:
        raise SpecError(f"unknown security field(s) {sorted(unknown)}: use ca_file, cert and key")
    missing = [k for k in ("ca_file", "cert", "key") if not files.get(k)]
    if missing:
        raise SpecError(f"TLS needs ca_file, cert and key; missing: {', '.join(missing)}")
    import os

    for k in ("ca_file", "cert", "key"):
        if not os.path.isfile(files[k]):
            raise SpecError(f"TLS {k} file {files[k]!r} does not exist")
    return Security(
        tls_ca_file=files["ca_file"],
        tls_client_cert=files["cert"],
        tls_client_key=files["key"],
        require_encryption=True,
    )


class AddressProvider(Provider):
    """Attach to ``tcp://`` or ``tls://`` host:port."""

    name = "address"
    owns_scheduler = False
    launchable_from_server = False  # it attaches to someone else's scheduler: connect from a notebook
    can_scale = False

    def check(self, address: str, security: Security | None) -> None:
        """Refuse addresses that would be unsafe or cannot work, saying what to do instead."""
        scheme, host, _ = parse_address(address)
        allow = self.allow_insecure
        if allow is None:
            allow = bool(config.get("connect.allow-insecure-remote"))
        if scheme == "tcp" and not is_loopback_host(host) and not allow:
            raise InsecureAddress(
                f"refusing plain tcp:// to {host}: a Dask scheduler runs any code it is sent, and this link "
                "is neither encrypted nor authenticated. Use tls:// with certificates, an SSH tunnel to "
                "127.0.0.1, or pass allow_insecure=True if this network is trusted."
            )
        if scheme == "tls" and (security is None or not security.tls_client_cert):
            raise SpecError(
                f"{address} is a TLS scheduler but no client certificates were given: pass "
                "security={'ca_file': ..., 'cert': ..., 'key': ...} (or a distributed.Security), "
                "or set cumulo.tls.ca-file/cert/key"
            )

    async def preflight(self, spec: ClusterSpec) -> None:
        if not spec.address:
            raise SpecError("the address provider needs an address, e.g. connect('tcp://127.0.0.1:8786')")
        self.check(spec.address, self.security_for_address())
        from ..spec import probe_loopback  # a refused loopback port fails now, not after connect.timeout

        probe_loopback(spec.address)

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        assert spec.address is not None  # preflight checked it
        return Deployment(spec.address, security=self.security_for_address())

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Nothing to stop: the scheduler belongs to whoever started it."""

    def security_for_address(self) -> Security | None:
        """The user's TLS, else the cumulo.tls.* config."""
        return self.user_security if self.user_security is not None else security_from(None)

    def security(self, record: ClusterRecord) -> Security | None:
        return self.security_for_address()
