"""Azure Resource Manager through the official SDKs, the one client: credential, subscription, clients, errors.

The SDK clients (azure-mgmt-resource, -compute, -network) carry their own
pipeline: azure-core's RetryPolicy (429 and 503 retried, honouring
Retry-After), ARM's challenge-aware bearer-token policy, and the ARM pollers
for long-running operations (Azure-AsyncOperation / Location). cumulo only
configures them: ``cumulo.azure.arm-endpoint`` as their ``base_url`` (and its
``/.default`` token scope), ``retry-total``, timeouts and the pollers'
interval. The SDK is blocking, so every call runs in a worker thread
(:meth:`Azure.call`) and the cluster's event loop stays responsive. What is
left after the retries comes back as a :class:`~cumulo.exceptions.CumuloError`
whose text never holds a token.

The credential is azure-identity's DefaultAzureCredential (az login,
environment, managed identity, workload identity), imported only when used,
or with ``cumulo.azure.credential: static-token`` a bearer token read from
AZURE_ACCESS_TOKEN (:class:`StaticToken`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from dask.utils import parse_timedelta

from ... import config
from ...exceptions import (
    CapacityError,
    CredentialsError,
    MissingDependency,
    ProviderError,
    QuotaError,
    SpecError,
)

try:  # optional extra: pip install 'cumulo[azure]'
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError as exc:  # pragma: no cover - the azure extra is installed in tests
    raise MissingDependency("the Azure provider needs the Azure SDKs: pip install 'cumulo[azure]'") from exc

__all__ = ["TOKEN_ENV", "Azure", "StaticToken", "translate"]

#: Where ``cumulo.azure.credential: static-token`` reads its bearer token.
TOKEN_ENV = "AZURE_ACCESS_TOKEN"

_HINT_CREDENTIALS = ("cumulo uses azure-identity's DefaultAzureCredential (`az login`, AZURE_CLIENT_ID/"
                     "AZURE_TENANT_ID/AZURE_CLIENT_SECRET, a managed identity) or, with cumulo.azure.credential: "
                     f"static-token, a token in {TOKEN_ENV} (`az account get-access-token`): check it with "
                     "`az account show`")
#: ARM error codes meaning "no capacity of this size here, now".
_CAPACITY_CODES = frozenset({"AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
                             "OverconstrainedZonalAllocationRequest", "SkuNotAvailable"})
_QUOTA_CODES = frozenset({"QuotaExceeded", "OperationNotAllowed"})
_SPEC_CODES = frozenset({"InvalidParameter", "InvalidRequestContent", "InvalidTemplate",
                         "LocationNotAvailableForResourceType",
                         "NoRegisteredProviderFound", "InvalidApiVersionParameter", "BadRequest",
                         "SubscriptionNotFound", "InvalidSubscriptionId"})


class StaticToken:
    """A TokenCredential holding one bearer token (AZURE_ACCESS_TOKEN), as ``az account get-access-token`` gives.

    It never refreshes: a token expires after about an hour, and the next call is then refused as a
    CredentialsError. For CI and tests; people use DefaultAzureCredential.
    """

    def __init__(self, token: str, *, lifetime: float = 3600.0) -> None:
        self._token = token
        self._expires = int(time.time() + lifetime)

    @classmethod
    def from_env(cls) -> StaticToken:
        """The token in AZURE_ACCESS_TOKEN; CredentialsError (naming the variable only) when it is unset."""
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise CredentialsError(f"cumulo.azure.credential is static-token but {TOKEN_ENV} is not set: put the "
                                   "output of `az account get-access-token --query accessToken -o tsv` there")
        return cls(token)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """The token, whatever the scope (azure-core's TokenCredential protocol)."""
        return AccessToken(self._token, self._expires)

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"

    def __reduce__(self) -> Any:
        raise TypeError("a credential is never pickled")


def _credential() -> Any:
    kind = str(config.get("azure.credential"))
    if kind == "static-token":
        return StaticToken.from_env()
    try:  # heavy, and optional: only when the default credential is used
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise MissingDependency("the Azure provider needs azure-identity: pip install 'cumulo[azure]'") from exc
    return DefaultAzureCredential()


def _code_of(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code or "")


def _message_of(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "message", None) or exc.reason or "").strip()


def translate(exc: BaseException, what: str) -> BaseException:
    """A cumulo error for an Azure SDK failure of ``what`` (ARM's code and message; never a token)."""
    if isinstance(exc, ClientAuthenticationError):
        status = getattr(exc, "status_code", None)
        return CredentialsError(f"Azure refused the credentials for {what}"
                                + (f" (HTTP {status}{': ' + _code_of(exc) if _code_of(exc) else ''})" if status else "")
                                + f". {_HINT_CREDENTIALS}")
    if isinstance(exc, HttpResponseError):
        code, message = _code_of(exc), _message_of(exc)
        text = f"Azure refused {what}: {code or exc.status_code}: {message}".rstrip(": ")
        status = exc.status_code
        if status in (401, 403) and code not in _QUOTA_CODES:
            return CredentialsError(f"{text}. {_HINT_CREDENTIALS}")
        if code in _QUOTA_CODES and "quota" in message.lower():
            err: ProviderError = QuotaError(f"{text}. Ask for more in the portal (Subscriptions > Usage + quotas, "
                                            "the VM family's vCPUs), or ask for fewer or smaller VMs")
        elif code in _CAPACITY_CODES:
            err = CapacityError(f"{text}. Try another region (region=) or GPU type, or later")
        elif code in _SPEC_CODES or (status == 400 and not code):
            err = SpecError(text)  # type: ignore[assignment]
        else:
            err = ProviderError(text)
        err.code = code  # type: ignore[attr-defined]
        return err
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        err = ProviderError(f"Azure did not answer {what} ({type(exc).__name__}) after retries")
        err.maybe_applied = True  # type: ignore[attr-defined]
        return err
    if isinstance(exc, AzureError):
        return ProviderError(f"Azure call {what} failed: {type(exc).__name__}: {exc.message}")
    return exc


class Azure:
    """The three ARM clients of one subscription, built on first use with ``cumulo.azure.*`` settings."""

    def __init__(self, subscription_id: str, *, credential: Any = None) -> None:
        self.subscription_id = subscription_id
        self.endpoint = str(config.get("azure.arm-endpoint")).rstrip("/")
        self._credential = credential
        self._clients: dict[str, Any] = {}

    @property
    def credential(self) -> Any:
        if self._credential is None:
            self._credential = _credential()
        return self._credential

    def _kwargs(self) -> dict[str, Any]:
        return dict(
            base_url=self.endpoint, credential_scopes=[f"{self.endpoint}/.default"],
            polling_interval=float(parse_timedelta(config.get("azure.poll-interval"))),
            retry_total=int(config.get("azure.retry-total")),
            connection_timeout=float(parse_timedelta(config.get("azure.connection-timeout"))),
            read_timeout=float(parse_timedelta(config.get("azure.read-timeout"))),
        )

    def _client(self, name: str, cls: type) -> Any:
        if name not in self._clients:
            self._clients[name] = cls(self.credential, self.subscription_id, **self._kwargs())
        return self._clients[name]

    @property
    def resources(self) -> ResourceManagementClient:
        return self._client("resources", ResourceManagementClient)

    @property
    def compute(self) -> ComputeManagementClient:
        return self._client("compute", ComputeManagementClient)

    @property
    def network(self) -> NetworkManagementClient:
        return self._client("network", NetworkManagementClient)

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a worker thread; cumulo errors for Azure's (:func:`translate`)."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except AzureError as exc:
            raise translate(exc, what) from None

    async def wait(self, what: str, begin: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start a long-running operation (``begin_*``) and wait for its poller's result, in a worker thread."""

        def run() -> Any:
            return begin(*args, **kwargs).result()

        return await self.call(what, run)

    async def get_or_none(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (a GET) in a worker thread; None when ARM answers that it does not exist."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise translate(exc, what) from None

    def close(self) -> None:
        """Close the clients' connections (and the credential's, where it has any)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        close = getattr(self._credential, "close", None)
        if callable(close):
            close()
