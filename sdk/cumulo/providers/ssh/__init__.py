"""``ssh://user@host1,host2``: Dask on hosts you can log in to (see provider.py)."""

from .provider import SSHProvider

__all__ = ["SSHProvider"]
