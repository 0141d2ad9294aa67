"""AWS EC2 GPU instances as a Dask cluster (provider ``"aws"``); see docs/aws.md.

A thin adapter package that the cloud layer (``providers/cloud/``: launch,
teardown, orphan sweep, first boot, firewall source) drives. One idea per module:

- ``api.py``: boto3 clients per region, retries, and AWS's errors as cumulo's (the one AWS client);
- ``adapter.py``: EC2 in the cloud layer's words (instances, a security group and a key pair per cluster);
- ``tags.py``: the tags that mark this installation's resources (its ownership, whatever the Name says);
- ``shapes.py``: GPU models -> instance types, from the catalog; ``market.py``: spot and on-demand attempts
  in order, each with its price;
- ``preflight.py``: every refusal before anything bills, and the plan; ``quotas.py``: the vCPU quota check;
- ``pricelist.py``: ``cumulo prices --refresh`` for AWS (on-demand from the public price list, spot per zone);
- ``keys.py``: the AWS credentials workers must never see; ``provider.py``: the Provider (config.yaml,
  prices.csv), listed in providers/__init__.py with the other built-in providers.
"""

from __future__ import annotations

from .provider import AWSDeployment, AWSProvider

__all__ = ["AWSDeployment", "AWSProvider"]
