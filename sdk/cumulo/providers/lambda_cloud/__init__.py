"""Lambda Cloud GPU instances as a Dask cluster (provider ``"lambda"``); see docs/lambda.md.

A thin adapter package that the cloud layer (``providers/cloud/``: launch,
teardown, orphan sweep, first boot, firewall source) drives. One idea per module:

- ``api.py``: the one Lambda HTTP client (over cumulo.http) and the API key's declaration;
- ``adapter.py``: that client in the cloud layer's words (create, list, terminate, rule, key, marks);
- ``names.py``: how Lambda resources are named (its mark: Lambda has no tags);
- ``shapes.py``: instance types and the choice of one; ``preflight.py``: every refusal before anything bills;
- ``network.py``: Lambda's firewall-source setting; ``prices.py``: live list prices for the catalog;
- ``provider.py``: the Provider, with what generic code needs from it (config.yaml, prices.csv, the key).

(The package is not called ``lambda``: that is a keyword, so ``import cumulo.providers.lambda`` cannot be written.)
"""

from __future__ import annotations

import importlib
from typing import Any

from .key import API_KEY
from .names import PREFIX
from .provider import LambdaDeployment, LambdaProvider
from .shapes import InstanceType, choose_instance_type

__all__ = [
    "API_KEY", "InstanceType", "LAMBDA_ERRORS", "LambdaAdapter", "LambdaApi", "LambdaDeployment", "LambdaProvider",
    "PREFIX", "choose_instance_type", "lambda_api_key",
]

#: Names of the API client's modules, loaded on first use: declaring the provider (which every
#: connect() does, for config validation and the workers' scrub list) must not load httpx.
_LATER = {"LAMBDA_ERRORS": "api", "LambdaApi": "api", "lambda_api_key": "api", "LambdaAdapter": "adapter"}


def __getattr__(name: str) -> Any:
    if name in _LATER:
        return getattr(importlib.import_module(f"{__name__}.{_LATER[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
