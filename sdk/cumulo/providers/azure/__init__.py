"""Azure GPU virtual machines (provider ``"azure"``); see docs/azure.md.

A thin adapter package that the cloud layer (``providers/cloud/``: launch,
teardown, orphan sweep, first boot, firewall source) drives. One idea per module:

- ``api.py``: the Azure SDK clients (credential, subscription, base URL, retries, pollers) and ARM's errors
  as cumulo's (the one Azure client);
- ``adapter.py``: ARM in the cloud layer's words (a resource group per cluster with its network and NSG,
  a NIC and a VM per instance);
- ``marks.py``: deterministic names and the tags that mark this installation's resources;
- ``shapes.py``: GPU models -> VM sizes, from the catalog; ``regions.py``: Azure's regions, offline;
- ``preflight.py``: every refusal before anything bills, and the plan (Spot attempts: cloud/market.py);
  ``quotas.py``: the vCPU quota checks (regular and low-priority); ``spotprices.py``: a size's Spot price;
- ``notice.py``: run on the VMs (standard library only): Scheduled Events' Preempt for the shared watcher;
- ``subscription.py``: which subscription (option, config, environment; no SDK needed);
- ``keys.py``: the Azure credentials workers must never see; ``provider.py``: the Provider (config.yaml),
  listed in providers/__init__.py with the other built-in providers.
"""

from __future__ import annotations

from .provider import AzureDeployment, AzureProvider

__all__ = ["AzureDeployment", "AzureProvider"]
