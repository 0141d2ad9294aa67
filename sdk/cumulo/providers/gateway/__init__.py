"""A team's dask-gateway as a provider (``connect("gateway://host:port")``); see provider.py and docs/gateway.md.

Importing this package never imports dask_gateway: the ``gateway`` extra is
optional, and MissingDependency names it only when a gateway is actually used.
"""

from __future__ import annotations

from .provider import GatewayDeployment, GatewayProvider

__all__ = ["GatewayDeployment", "GatewayProvider"]
