"""The Azure credentials cumulo may meet, declared so that workers never see them and ``cumulo share`` finds them.

cumulo never stores them: azure-identity reads them (DefaultAzureCredential), or
with ``cumulo.azure.credential: static-token`` cumulo reads AZURE_ACCESS_TOKEN
when it calls ARM. Declaring them here puts the environment variables on the
workers' scrub list and on the share scanner's; it loads nothing.
"""

from __future__ import annotations

from ...security.credentials import Credential

__all__ = ["ACCESS_TOKEN", "CLIENT_SECRET", "CREDENTIALS"]

ACCESS_TOKEN = Credential(what="Azure access token", env_var="AZURE_ACCESS_TOKEN")
CLIENT_SECRET = Credential(what="Azure client secret", env_var="AZURE_CLIENT_SECRET")
CREDENTIALS = (ACCESS_TOKEN, CLIENT_SECRET)
