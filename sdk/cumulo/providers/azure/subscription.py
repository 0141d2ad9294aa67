"""Which Azure subscription cumulo works in: read from the spec and configuration only (no SDK needed).

connect(subscription_id=) wins, then ``cumulo.azure.subscription-id``, then
AZURE_SUBSCRIPTION_ID (what ``az account show --query id`` prints). The
subscription is stored with the cluster's spec, so a stop from another
process (``cumulo down``, a reaper) works in the one the cluster was launched in.
"""

from __future__ import annotations

import os

from ... import config
from ...exceptions import SpecError

__all__ = ["SUBSCRIPTION_ENV", "configured_subscription", "subscription_of"]

SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"


def configured_subscription(option: str | None) -> str | None:
    """connect(subscription_id=), else cumulo.azure.subscription-id, else AZURE_SUBSCRIPTION_ID; None: none."""
    return str(option or config.get("azure.subscription-id") or os.environ.get(SUBSCRIPTION_ENV) or "") or None


def subscription_of(option: str | None) -> str:
    """The subscription to use (:func:`configured_subscription`); SpecError saying how to give one."""
    found = configured_subscription(option)
    if not found:
        raise SpecError("say which Azure subscription to launch in: connect('azure', subscription_id='...'), "
                        f"cumulo.azure.subscription-id, or {SUBSCRIPTION_ENV} (`az account show --query id`)")
    return str(found)
