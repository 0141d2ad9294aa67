"""Lambda Cloud GPU instances as a Dask cluster (provider ``"lambda"``); see docs/lambda.md.

One idea per module:

- ``api.py``: the one Lambda HTTP client (over cumulo.http); ``shapes.py``: instance types and the choice of one;
- ``preflight.py``: every refusal before anything bills; ``network.py``: the firewall's source address;
- ``launch.py``: the launch sequence; ``sshkey.py``: the per-cluster SSH key pair;
- ``teardown.py``: terminate (confirmed), firewall rule and SSH key removal;
- ``orphans.py``: the sweep for what no open cluster owns; ``names.py``: how everything is named;
- ``prices.py``: live list prices for the catalog; ``provider.py``: the Provider tying them together.

(The package is not called ``lambda``: that is a keyword, so ``import cumulo.providers.lambda`` cannot be written.)
"""

from __future__ import annotations

from .api import LAMBDA_ERRORS, LambdaApi
from .names import PREFIX
from .orphans import sweep
from .provider import LambdaDeployment, LambdaProvider
from .shapes import InstanceType, choose_instance_type
from .teardown import teardown

__all__ = [
    "InstanceType", "LAMBDA_ERRORS", "LambdaApi", "LambdaDeployment", "LambdaProvider", "PREFIX",
    "choose_instance_type", "sweep", "teardown",
]
