"""AWS through boto3, the one client: sessions and clients per region, retries, and AWS's errors as cumulo's.

Credentials come from boto3's standard chain (environment, shared profile,
SSO, instance role) and endpoints from its standard overrides
(``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_EC2``, ...): cumulo stores neither,
and an emulator or a VPC endpoint needs no cumulo setting. boto3 is blocking,
so every call runs in a worker thread (:meth:`Aws.call`): the cluster's event
loop stays responsive. Throttling (``RequestLimitExceeded``) and timeouts are
retried by botocore's standard retry mode, with backoff; what is left comes
back as a :class:`~cumulo.exceptions.CumuloError` whose text never holds a
credential.
"""

from __future__ import annotations

import asyncio
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
    did_you_mean,
)

try:  # optional extra: pip install 'cumulo[aws]'
    import boto3
    import botocore.config
    import botocore.exceptions
    import botocore.parsers
except ImportError as exc:  # pragma: no cover - the aws extra is installed in tests
    raise MissingDependency("the AWS provider needs boto3: pip install 'cumulo[aws]'") from exc

__all__ = ["CAPACITY_CODES", "Aws", "error_code", "translate"]

#: Error codes meaning "no capacity of this kind here, now": the spot fallback moves on.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded",
    "InsufficientCapacity", "capacity-not-available", "Unsupported",
})
_CREDENTIAL_CODES = frozenset({
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId",
})
#: Quota refusals that no other zone or market would answer differently (MaxSpotInstanceCountExceeded is
#: a capacity code above: on-demand may still be granted, so the fallback goes on).
_QUOTA_CODES = frozenset({"VcpuLimitExceeded", "InstanceLimitExceeded"})
_HINT_CREDENTIALS = ("cumulo uses boto3's credentials (AWS_PROFILE, `aws sso login`, environment variables or an "
                     "instance role): check them with `aws sts get-caller-identity`")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def translate(exc: BaseException, what: str) -> BaseException:
    """A cumulo error for a botocore failure of ``what`` (the message is AWS's, never a credential)."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return CredentialsError(f"no AWS credentials found for {what}: {_HINT_CREDENTIALS}")
    if isinstance(exc, botocore.exceptions.TokenRetrievalError | botocore.exceptions.SSOError):
        return CredentialsError(f"AWS credentials could not be refreshed for {what} ({type(exc).__name__}): "
                                "run `aws sso login` again")
    code = error_code(exc)
    if code:
        message = str(exc.response.get("Error", {}).get("Message", "")) if isinstance(
            exc, botocore.exceptions.ClientError) else ""
        text = f"AWS refused {what}: {code}: {message}".rstrip(": ")
        if code in _CREDENTIAL_CODES:
            return CredentialsError(f"{text}. {_HINT_CREDENTIALS}")
        if code in _QUOTA_CODES:
            return QuotaError(f"{text}. Ask for more in the Service Quotas console (EC2, the instance family's "
                              "vCPU quota), or ask for fewer or smaller instances")
        if code in CAPACITY_CODES:
            err: ProviderError = CapacityError(text)
        elif code.startswith("Invalid") or code in ("MissingParameter", "ParameterNotFound"):
            return SpecError(text)
        else:
            err = ProviderError(text)
        err.code = code  # type: ignore[attr-defined]
        return err
    if isinstance(exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
                  | botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError):
        err = ProviderError(f"AWS did not answer {what} ({type(exc).__name__}) after retries")
        err.maybe_applied = True  # type: ignore[attr-defined]
        return err
    return ProviderError(f"AWS call {what} failed: {type(exc).__name__}")


#: What a boto3 call raises besides its result: botocore's errors, AWS's answers, and an answer it cannot read.
_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, botocore.parsers.ResponseParserError)


def _api_name(client: Any, operation: str) -> str:
    """AWS's name of a client method ("run_instances" -> "RunInstances"), as AWS's docs and console say it."""
    return str(client.meta.method_to_api_mapping.get(operation, operation))


class Aws:
    """boto3 clients by (service, region) from one session, with ``cumulo.aws.*`` timeouts and retries."""

    def __init__(self, *, profile: str | None = None) -> None:
        self.session = boto3.session.Session(profile_name=profile or config.get("aws.profile") or None)
        self._config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": int(config.get("aws.max-attempts"))},
            connect_timeout=float(parse_timedelta(config.get("aws.connect-timeout"))),
            read_timeout=float(parse_timedelta(config.get("aws.read-timeout"))),
        )
        self._clients: dict[tuple[str, str], Any] = {}

    def check_region(self, region: str) -> None:
        """SpecError for a region EC2 does not have (botocore's own list, read offline)."""
        known = set(self.session.get_available_regions("ec2")) | set(
            self.session.get_available_regions("ec2", partition_name="aws-us-gov"))
        if known and region not in known:
            raise SpecError(f"AWS has no region {region!r}{did_you_mean(region, known)}; pass region= one of "
                            f"{', '.join(sorted(known))}")

    @property
    def default_region(self) -> str:
        """``cumulo.aws.region``, else the session's (AWS_REGION, the profile), else us-east-1."""
        return str(config.get("aws.region") or self.session.region_name or "us-east-1")

    def client(self, service: str, region: str) -> Any:
        """A client for ``service`` in ``region`` (endpoints from boto3's own settings), made once."""
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self.session.client(service, region_name=region, config=self._config)
        return self._clients[key]

    async def call(self, service: str, region: str, operation: str, **params: Any) -> Any:
        """``client.operation(**params)`` in a worker thread; cumulo errors for AWS's (see :func:`translate`)."""
        client = self.client(service, region)
        method: Callable[..., Any] = getattr(client, operation)
        try:
            return await asyncio.to_thread(method, **params)
        except _ERRORS as exc:
            raise translate(exc, f"{_api_name(client, operation)} in {region}") from None

    async def pages(self, service: str, region: str, operation: str, key: str, **params: Any) -> list[Any]:
        """Every item under ``key`` of a paginated operation."""
        client = self.client(service, region)

        def collect() -> list[Any]:
            out: list[Any] = []
            for page in client.get_paginator(operation).paginate(**params):
                out.extend(page.get(key, []))
            return out

        try:
            return await asyncio.to_thread(collect)
        except _ERRORS as exc:
            raise translate(exc, f"{_api_name(client, operation)} in {region}") from None
