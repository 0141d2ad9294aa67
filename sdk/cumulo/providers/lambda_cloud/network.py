"""Lambda's firewall source: ``cumulo.lambda.client-cidr``, else this machine's address towards Lambda's API.

The rule and its NAT refusal are the cloud layer's (cloud/network.py); this
names Lambda's setting and asks for the address through :func:`outgoing_address`
here, so that one place decides what Lambda's firewall admits.
"""

from __future__ import annotations

from ... import config
from ..cloud import network as _cloud
from ..cloud.network import outgoing_address

__all__ = ["client_cidr", "outgoing_address"]


def client_cidr(base_url: str) -> str:
    """The source network for the scheduler's firewall rule at Lambda; SpecError behind NAT (see cloud/network.py)."""
    return _cloud.client_cidr(base_url, configured=config.get("lambda.client-cidr"),
                              setting="cumulo.lambda.client-cidr", cloud="Lambda",
                              outgoing=lambda host: outgoing_address(host))
