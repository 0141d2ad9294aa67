"""Which detectors find secrets: detect-secrets' plugins (the ``share`` extra) and cumulo's own.

The high-entropy heuristics of detect-secrets are left out (see :mod:`cumulo.share`); cumulo adds
Hugging Face, Lambda Cloud and Google API keys, ``Authorization:`` / API-key headers, passwords in
connection strings and secrets in URL query strings, on detect-secrets' own regex base.
"""

from __future__ import annotations

import re
from typing import Any

from ..exceptions import MissingDependency

__all__: list[str] = []


def _detect_secrets() -> Any:
    try:
        import detect_secrets.plugins.base as base
    except ImportError as exc:
        raise MissingDependency(
            "cumulo share needs detect-secrets to find secrets: pip install 'cumulo[share]' "
            "(nothing was written)") from exc
    return base


def _extra_plugins(base: Any) -> list[type]:
    """Detectors detect-secrets 1.5 lacks, written on its own RegexBasedDetector base."""
    rx = base.RegexBasedDetector

    class HuggingFaceTokenDetector(rx):  # type: ignore[misc, valid-type]
        """Hugging Face user access tokens (hf_ + 34 letters and digits)."""

        secret_type = "Hugging Face Token"
        denylist = [re.compile(r"\b(hf_[A-Za-z0-9]{30,})\b")]

    class LambdaCloudKeyDetector(rx):  # type: ignore[misc, valid-type]
        """Lambda Cloud API keys (secret_<name>_<random>)."""

        secret_type = "Lambda Cloud API Key"
        denylist = [re.compile(r"\b(secret_[A-Za-z0-9\-]+_[A-Za-z0-9_.\-]{16,})")]

    class GoogleApiKeyDetector(rx):  # type: ignore[misc, valid-type]
        """Google Cloud API keys (AIza + 35 characters)."""

        secret_type = "Google API Key"
        denylist = [re.compile(r"\b(AIza[0-9A-Za-z_\-]{35})")]

    class AuthorizationHeaderDetector(rx):  # type: ignore[misc, valid-type]
        """HTTP credentials: Authorization (Bearer, Basic, Token, ...) and API-key headers."""

        secret_type = "Authorization Header"
        denylist = [
            re.compile(r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token|digest|apikey|"
                       r"api-key|sso-key|key)\s+([A-Za-z0-9_\-.+/=~:]{8,})"),
            re.compile(r"(?i)\b(?:x-api-key|api-key|x-auth-token|x-access-token|private-token)[\"']?\s*[:=]\s*"
                       r"[\"']?([A-Za-z0-9_\-.+/=~]{12,})"),
        ]

    class ConnectionStringPasswordDetector(rx):  # type: ignore[misc, valid-type]
        """Passwords in connection strings (ODBC, ADO.NET, libpq key=value)."""

        secret_type = "Password in Connection String"
        denylist = [
            re.compile(r"(?i)(?:^|[;\s\"'])(?:password|pwd|passwd)\s*=\s*([^;\"'\s&]{4,})(?=;|$|[\"'\s])"),
        ]

    class QueryStringSecretDetector(rx):  # type: ignore[misc, valid-type]
        """Credentials in URL query strings (?token=..., &api_key=..., &sig=...)."""

        secret_type = "Secret in URL Query"
        denylist = [
            re.compile(r"(?i)[?&](?:password|passwd|pwd|token|access_token|api_key|apikey|secret|client_secret|sig)"
                       r"=([^&#\s\"'<>]{6,})"),
        ]

    return [HuggingFaceTokenDetector, LambdaCloudKeyDetector, GoogleApiKeyDetector, AuthorizationHeaderDetector,
            ConnectionStringPasswordDetector, QueryStringSecretDetector]


#: The detect-secrets plugins used, by class name (format-specific first: their kind wins a tie).
_BUILTIN = ("AWSKeyDetector", "AzureStorageKeyDetector", "GitHubTokenDetector", "GitLabTokenDetector",
            "SlackDetector", "StripeDetector", "OpenAIDetector", "PypiTokenDetector", "NpmDetector",
            "DiscordBotTokenDetector", "TelegramBotTokenDetector", "TwilioKeyDetector", "SendGridDetector",
            "MailchimpDetector", "SquareOAuthDetector", "ArtifactoryDetector", "JwtTokenDetector",
            "IbmCosHmacDetector", "IbmCloudIamDetector", "CloudantDetector", "SoftlayerDetector",
            "BasicAuthDetector")
#: Plugins that read an assignment (name = value): their values pass detect-secrets' false-positive filters.
_ASSIGNMENT = {"KeywordDetector", "IbmCloudIamDetector", "CloudantDetector", "SoftlayerDetector",
               "IbmCosHmacDetector", "ConnectionStringPasswordDetector", "QueryStringSecretDetector",
               "ArtifactoryDetector"}


def _builtin_plugins() -> list[Any]:
    import importlib
    import inspect
    import pkgutil

    import detect_secrets.plugins as pkg

    found: dict[str, type] = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if name in _BUILTIN:
                found[name] = obj
    return [found[n]() for n in _BUILTIN if n in found]

