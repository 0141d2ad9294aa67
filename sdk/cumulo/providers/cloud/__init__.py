"""What every rented-instance cloud shares, driven through one small adapter per cloud.

A cloud provider is :class:`~.provider.CloudProvider` plus a :class:`~.adapter.CloudAdapter`
over its API (create, list/describe, terminate, one firewall rule, one SSH key, and the
marks that say which resources are this installation's). The layer does the rest the
same way for every cloud (docs/providers.md):

- ``launch.py``: record -> request -> adopt -> wait for active -> TLS scheduler -> workers;
- ``deployment.py``: the running cluster in the process that launched it: scale(n), replacing what the cloud
  took back;
- ``teardown.py``: terminate from records and by mark, confirmed, then rule, key and certificates;
- ``orphans.py``: what no open cluster owns, this installation's (terminated) or others' (reported);
- ``plan.py``: the launch plan, the confirm-above-price check; ``network.py``: the firewall's source
  address and the NAT refusal; ``sshkey.py``: the per-cluster SSH key pair;
- ``bootstrap.py``: the first-boot script; ``settings.py``: ``cumulo.cloud.*`` and the provider's own keys.
"""

from __future__ import annotations

from .adapter import ACTIVE, BOOTING, GONE, CloudAdapter, Instance, Mark, Resource
from .deployment import CloudDeployment
from .plan import Plan, check_price, last_resort_idle
from .provider import CloudProvider
from .settings import SHARED, CloudSay, CloudSettings

__all__ = [
    "ACTIVE", "BOOTING", "GONE", "SHARED", "CloudAdapter", "CloudDeployment", "CloudProvider", "CloudSay",
    "CloudSettings", "Instance", "Mark", "Plan", "Resource", "check_price", "last_resort_idle",
]
