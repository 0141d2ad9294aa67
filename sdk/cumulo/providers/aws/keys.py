"""The AWS credentials cumulo may meet, declared so that workers never see them and ``cumulo share`` finds them.

cumulo never reads or stores them itself: boto3's standard chain does (the
environment, a profile, SSO, an instance role). Declaring them here puts the
environment variables on the workers' scrub list and the key format on the
share scanner's list; it loads nothing.
"""

from __future__ import annotations

from ...security.credentials import Credential

__all__ = ["ACCESS_KEY_ID", "CREDENTIALS", "SECRET_ACCESS_KEY", "SESSION_TOKEN"]

ACCESS_KEY_ID = Credential(what="AWS access key id", env_var="AWS_ACCESS_KEY_ID",
                           pattern=r"\b((?:AKIA|ASIA)[0-9A-Z]{16})\b")
SECRET_ACCESS_KEY = Credential(what="AWS secret access key", env_var="AWS_SECRET_ACCESS_KEY")
SESSION_TOKEN = Credential(what="AWS session token", env_var="AWS_SESSION_TOKEN")
CREDENTIALS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)
