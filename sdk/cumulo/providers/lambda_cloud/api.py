"""Lambda Cloud's REST API v1, as typed calls over cumulo's careful HTTP client: the one Lambda client.

Only the endpoints cumulo uses: instance types (with prices and regions that
have capacity now), launch (with tags and firewall rulesets), list, get,
terminate, SSH keys (list, add, delete), firewall rulesets (list, create,
delete) and, for rows of older cumulo versions, the account-wide firewall rules. Shapes follow Lambda's public documentation (see
../shared/DESIGN.md, "Facts about the outside world"); errors come back as
cumulo exceptions via :data:`LAMBDA_ERRORS`. Every request, the price refresh's
included, goes through :class:`cumulo.http.ApiClient`, so pacing, retries and
the scrubbing of the API key from every message hold everywhere.
"""

from __future__ import annotations

from typing import Any

from dask.utils import parse_timedelta

from ... import config
from ...exceptions import AccountError, CapacityError, CredentialsError, ProviderError, QuotaError, SpecError
from ...http import DEFAULT_HINTS, ApiClient, ErrorMapping
from ...security.credentials import Secret, find
from .key import API_KEY
from .shapes import Image, InstanceType, parse_images, parse_instance_types

__all__ = ["API_KEY", "LAMBDA_ERRORS", "LambdaApi", "lambda_api_key"]



def lambda_api_key() -> Secret:
    """The Lambda Cloud API key from LAMBDA_API_KEY, ``cumulo.lambda.api-key-file`` or the keyring."""
    return find(API_KEY)

LAMBDA_ERRORS = ErrorMapping(
    provider="Lambda Cloud",
    codes={
        "global/invalid-api-key": CredentialsError,
        "global/account-inactive": AccountError,
        "global/invalid-address": AccountError,
        "global/quota-exceeded": QuotaError,
        "instance-operations/launch/insufficient-capacity": CapacityError,
        "global/invalid-parameters": SpecError,
        "instance-operations/launch/": ProviderError,
    },
    hints={
        **DEFAULT_HINTS,
        CredentialsError: "Check LAMBDA_API_KEY (or your key file/keyring entry); cumulo shows only its last 4 "
        "characters. Create a new key in Lambda's dashboard if it was revoked.",
        CapacityError: "Capacity changes by the minute: try another region or shape, or again later.",
    },
    code_hints={
        "global/invalid-address": "Lambda needs a valid billing address on the account before it launches "
        "anything: add or correct it in Lambda's dashboard (Settings, Billing), then try again. Your API key "
        "is fine.",
        "global/account-inactive": "The Lambda account is not active (a new account awaiting approval, or one "
        "suspended, e.g. for an unpaid invoice): see Lambda's dashboard or contact Lambda support. Your API "
        "key is fine.",
    },
    # upstream failures at Lambda ("try again"): retried with backoff, then reported
    retry=("provider/",),
)


def _not_found(exc: ProviderError) -> bool:
    return getattr(exc, "status", None) == 404


class LambdaApi:
    """The Lambda Cloud API endpoints cumulo uses, configured from ``cumulo.lambda.*``.

    ``base_url``, ``timeout`` and ``max_retries`` override the config (the price
    refresh uses ``cumulo.catalog.*``). Building one looks up the API key, so a
    missing key is a CredentialsError here, before any request.
    """

    def __init__(
        self,
        secret: Secret | None = None,
        *,
        base_url: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        self.secret = secret or lambda_api_key()
        self.client = ApiClient(
            base_url or str(config.get("lambda.base-url")),
            secret=self.secret,
            errors=LAMBDA_ERRORS,
            max_retries=int(config.get("lambda.max-retries")) if max_retries is None else max_retries,
            timeout=float(parse_timedelta(config.get("lambda.request-timeout"))) if timeout is None else timeout,
            min_interval=float(config.get("lambda.request-interval")),
            intervals={"/instance-operations/launch": float(config.get("lambda.launch-interval"))},
            windows={"/instance-operations/launch": (int(config.get("lambda.launches-per-minute") or 0), 60.0)},
        )

    def __repr__(self) -> str:
        return f"LambdaApi({self.client.base_url!r}, key {self.secret.hint})"

    async def __aenter__(self) -> LambdaApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    # -- instance types and instances ----------------------------------------------------------

    async def instance_types(self) -> dict[str, InstanceType]:
        """Every instance type with its price and the regions with capacity now (capacity is not reserved)."""
        return parse_instance_types((await self.client.request("GET", "/instance-types"))["data"])

    async def images(self) -> list[Image]:
        """The machine images instances can boot, one entry per region."""
        return parse_images((await self.client.request("GET", "/images"))["data"])

    async def launch(self, *, region: str, instance_type: str, name: str, ssh_key: str, user_data: str,
                     tags: dict[str, str] | None = None, firewall_rulesets: list[str] | None = None,
                     image: str | None = None) -> list[str]:
        """Launch one instance named ``name``, with ``tags`` and attached to ``firewall_rulesets`` (ids, in the
        same region); its id(s). Never retried after it may have applied.

        One instance per request: Lambda's launch endpoint refuses ``quantity`` above 1.
        """
        body: dict[str, Any] = {
            "region_name": region,
            "instance_type_name": instance_type,
            "ssh_key_names": [ssh_key],
            "file_system_names": [],
            "quantity": 1,
            "name": name,
            "user_data": user_data,
        }
        if tags:
            body["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if firewall_rulesets:
            body["firewall_rulesets"] = [{"id": r} for r in firewall_rulesets]
        if image:
            body["image"] = {"id": image}
        data = await self.client.request("POST", "/instance-operations/launch", json=body)
        return list(data["data"]["instance_ids"])

    async def instances(self) -> list[dict[str, Any]]:
        """All instances of the account (any status Lambda still lists)."""
        return list((await self.client.request("GET", "/instances"))["data"])

    async def instance(self, instance_id: str) -> dict[str, Any] | None:
        """One instance by id; None when Lambda no longer knows it (terminated long ago)."""
        try:
            return dict((await self.client.request("GET", f"/instances/{instance_id}"))["data"])
        except ProviderError as exc:
            if _not_found(exc):
                return None
            raise

    async def terminate(self, instance_ids: list[str]) -> list[dict[str, Any]]:
        """Ask Lambda to terminate instances (safe to repeat: retried on 5xx and timeouts).

        Lambda refuses the whole request if one id is unknown to it: pass only
        ids it lists as not terminated.
        """
        body = {"instance_ids": list(instance_ids)}
        data = await self.client.request("POST", "/instance-operations/terminate", json=body, idempotent=True)
        return list(data["data"].get("terminated_instances", []))

    # -- SSH keys ------------------------------------------------------------------------------

    async def ssh_keys(self) -> list[dict[str, Any]]:
        """The account's SSH keys: dicts with id, name and public_key."""
        return [dict(k) for k in (await self.client.request("GET", "/ssh-keys"))["data"]]

    async def ssh_key_names(self) -> list[str]:
        """Names of the SSH keys registered with the account."""
        return [str(k["name"]) for k in await self.ssh_keys()]

    async def add_ssh_key(self, name: str, public_key: str) -> dict[str, Any]:
        """Register a public key under ``name``; the stored key (id, name, public_key).

        Not retried after a 5xx or timeout (it may have applied): the caller
        finds the key by name at teardown.
        """
        data = await self.client.request("POST", "/ssh-keys", json={"name": name, "public_key": public_key})
        return dict(data["data"])

    async def delete_ssh_key(self, key_id: str) -> bool:
        """Delete an SSH key by id; False if Lambda did not know it (already deleted).

        Lambda answers a key that is already gone with 400 ``global/invalid-parameters``, not 404: that is
        "gone" when the key is no longer listed (a teardown racing another one must not fail on it)."""
        try:
            await self.client.request("DELETE", f"/ssh-keys/{key_id}")
        except ProviderError as exc:
            if _not_found(exc):
                return False
            raise
        except SpecError as exc:  # global/invalid-parameters
            if key_id not in {str(k.get("id")) for k in await self.ssh_keys()}:
                return False
            raise exc from None
        return True

    # -- firewall rulesets (per region, attached at launch) ------------------------------------

    async def firewall_rulesets(self) -> list[dict[str, Any]]:
        """The account's firewall rulesets: dicts with id, name, region and rules (the global one excluded)."""
        return [dict(r) for r in (await self.client.request("GET", "/firewall-rulesets"))["data"]]

    async def create_firewall_ruleset(self, *, name: str, region: str, rules: list[dict[str, Any]]) -> str:
        """Create a ruleset in ``region`` that instances launched there can be attached to; its id.

        Not retried after a 5xx or timeout (it may have applied): teardown finds it by name."""
        data = await self.client.request("POST", "/firewall-rulesets",
                                         json={"name": name, "region": region, "rules": rules})
        return str(data["data"]["id"])

    async def delete_firewall_ruleset(self, ruleset_id: str) -> bool:
        """Delete a ruleset; False if Lambda did not know it. A ruleset still attached to an instance is a
        ProviderError with code ``firewall-ruleset-in-use`` (wait until the instance is gone)."""
        try:
            await self.client.request("DELETE", f"/firewall-rulesets/{ruleset_id}")
        except ProviderError as exc:
            if _not_found(exc):
                return False
            raise
        return True

    # -- account-wide firewall rules (clusters of cumulo versions before rulesets) -------------

    async def firewall_rules(self) -> list[dict[str, Any]]:
        """The account's inbound firewall rules."""
        return list((await self.client.request("GET", "/firewall-rules"))["data"])

    async def set_firewall_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the account's inbound firewall rules (PUT replaces the whole list)."""
        await self.client.request("PUT", "/firewall-rules", json={"data": rules})
