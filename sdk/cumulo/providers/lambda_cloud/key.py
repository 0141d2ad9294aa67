"""Lambda's API key as the provider declares it: where cumulo finds it, and its format.

Kept apart from the API client so that declaring it (for the workers' scrub list,
``cumulo share`` and config validation, which every connect() reads) does not load
the HTTP client.
"""

from __future__ import annotations

from ...security.credentials import Credential

__all__ = ["API_KEY"]

#: Lambda's API key: where cumulo finds it, and its format (``cumulo share`` removes such keys from notebooks).
API_KEY = Credential(
    what="Lambda Cloud API key", env_var="LAMBDA_API_KEY", file_setting="lambda.api-key-file",
    default_file="lambda-api-key", keyring_service="cumulo-lambda",
    pattern=r"\b(secret_[A-Za-z0-9\-]+_[A-Za-z0-9_.\-]{16,})",
)
