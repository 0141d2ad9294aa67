"""Which source network may reach the scheduler's TLS port: this machine's public address, or the user's choice.

The firewall rule opens one port to one address. cumulo learns the address
from the socket it would use to reach the API. Behind NAT that address is
private (RFC 1918, carrier-grade NAT 100.64/10, link-local), and a rule for it
admits nobody, so the cluster would bill while unreachable; cumulo then
refuses before anything launches and asks for the provider's client-cidr
setting (``cumulo.lambda.client-cidr``). It never opens the port wider on its
own. Loopback is accepted only when the API itself is on loopback (an emulator,
whose instances live on 127/8).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ...exceptions import SpecError

__all__ = ["client_cidr", "outgoing_address"]

#: Addresses that cannot be what the cloud sees: RFC 1918, carrier-grade NAT (RFC 6598), link-local.
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"))


def _how(setting: str) -> str:
    env = "DASK_" + setting.upper().replace(".", "__").replace("-", "_")
    return (f"set {setting} to '<your public IP>/32' (the address the internet sees you at), "
            f"for example dask.config.set({{'{setting}': '203.0.113.7/32'}}) or "
            f"{env}=203.0.113.7/32, then connect again")


def outgoing_address(host: str) -> str | None:
    """The local address this machine uses to reach ``host`` (no packet is sent); None if unknown."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 443))
            return str(s.getsockname()[0])
    except OSError:
        return None


def _is_loopback_host(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def client_cidr(api_url: str, *, configured: Any, setting: str, cloud: str,
                outgoing: Callable[[str], str | None] = outgoing_address) -> str:
    """The source network for the firewall rule: ``configured`` (the value of ``setting``), else this
    machine's address towards ``api_url``/32, found with ``outgoing``.

    Raises SpecError (before anything is launched) when the address is private
    or cannot be told, saying how to set the public one.
    """
    how = _how(setting)
    if configured:
        try:
            return str(ipaddress.ip_network(str(configured), strict=False))
        except ValueError:
            raise SpecError(f"{setting}={configured!r} is not a network: {how}") from None
    host = urlsplit(api_url).hostname or ""
    address = outgoing(host) if host else None
    if address is None:
        raise SpecError(f"cumulo cannot tell which address this machine reaches {cloud} from, so it cannot open "
                        f"the scheduler's port to you alone: {how}")
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        if _is_loopback_host(host):
            return f"{address}/32"
        raise SpecError(f"cumulo cannot tell which address this machine reaches {cloud} from (it sees only "
                        f"loopback), so it cannot open the scheduler's port to you alone: {how}")
    if ip.is_unspecified or any(ip in net for net in _PRIVATE):
        raise SpecError(
            f"this machine's address {address} is private (you are behind NAT), so a firewall rule for it would "
            "admit nobody and the instances would bill while unreachable; cumulo will not open the port wider "
            f"on its own: {how}")
    return f"{address}/32"
