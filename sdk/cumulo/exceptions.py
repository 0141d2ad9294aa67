"""Every error cumulo raises on purpose, in one hierarchy.

Each message says what happened and what to do next. Lower-layer errors
(OSError, httpx, sqlite3, dask) are mapped to the most specific class below
with ``raise ... from exc`` so that the cause stays inspectable.

    CumuloError
    ├── SpecError                 bad input: a malformed address, a negative size, an unknown option
    ├── ConfigError               a cumulo.* config value that fails the schema
    ├── CredentialsError          missing or refused credentials (never includes the secret)
    ├── ConnectError              a scheduler could not be reached or answered wrongly
    │   ├── ConnectTimeout        ...within the configured timeout
    │   ├── InsecureAddress       a plain tcp:// address off loopback, not explicitly allowed
    │   └── HostKeyRefused        an SSH host's key is unknown or changed (names the fingerprint)
    ├── ClusterNotFound           no open cluster of that name in the registry
    ├── ClusterLost               the cluster's scheduler went away under an attached client
    ├── NotOwner                  an operation only the process that started a cluster can do
    ├── VersionMismatch           client, scheduler and workers disagree on key packages
    ├── RegistryError             the cluster registry could not be read or written
    ├── ProviderError             a compute backend refused or failed
    │   ├── CapacityError         no capacity for the requested shape (names where there is some)
    │   ├── QuotaError            an account limit was reached
    │   ├── RateLimited           the provider asked us to slow down
    │   ├── LaunchTimeout         an instance or worker did not come up in time
    │   ├── TerminateError        termination could not be confirmed (resources may still bill)
    │   └── EnvironmentSyncError  the notebook's environment could not be built on a host (names package, host)
    ├── BudgetExceeded            a cluster reached its budget and the configured action ran
    ├── MissingDependency         an optional package (an extra such as `train`) is not installed
    ├── NoGPUWorkers              GPU work was asked for but no worker sees a GPU
    ├── ShareRefused              a secret `cumulo share` cannot remove safely; nothing was written
    └── RemoteError               code cumulo ran on a worker raised; carries the remote traceback
        └── TrainingError         a training rank raised; names the rank and its worker
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import Protocol

__all__ = [
    "BudgetExceeded",
    "CapacityError",
    "ClusterLost",
    "ClusterNotFound",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "CredentialsError",
    "CumuloError",
    "EnvironmentSyncError",
    "HostKeyRefused",
    "InsecureAddress",
    "LaunchTimeout",
    "MissingDependency",
    "NoGPUWorkers",
    "NotOwner",
    "ProviderError",
    "QuotaError",
    "RateLimited",
    "RegistryError",
    "RemoteError",
    "ShareRefused",
    "SpecError",
    "TerminateError",
    "TrainingError",
    "VersionMismatch",
]


class CumuloError(Exception):
    """Base class of every error cumulo raises on purpose."""


class SpecError(CumuloError, ValueError):
    """A cluster request or argument is invalid; the message names the field and a valid form."""


class ConfigError(CumuloError, ValueError):
    """A ``cumulo.*`` configuration value does not match the schema."""


class CredentialsError(CumuloError):
    """Credentials are missing, unreadable or refused. Never carries the secret itself."""


class ConnectError(CumuloError, ConnectionError):
    """A scheduler could not be reached, or answered in a way we cannot use."""


class HostKeyRefused(ConnectError):
    """An SSH host presented a key that known_hosts does not vouch for; never accepted silently."""


class ConnectTimeout(ConnectError, TimeoutError):
    """A scheduler did not answer within ``cumulo.connect.timeout``."""


class InsecureAddress(ConnectError):
    """A plain ``tcp://`` scheduler address off loopback was refused.

    A Dask scheduler runs whatever pickled code it is sent, so an unencrypted,
    unauthenticated link is only accepted on loopback unless the user opts in.
    """


class ClusterNotFound(CumuloError, LookupError):
    """No open cluster of the given name is known to the registry."""


class ClusterLost(CumuloError):
    """The scheduler of an attached cluster is gone (killed, crashed, or shut down elsewhere)."""


class NotOwner(CumuloError):
    """The operation needs the cluster manager, which lives in the process that started it."""


class VersionMismatch(CumuloError):
    """Client, scheduler and workers run different versions of packages that must agree."""


class RegistryError(CumuloError):
    """The cluster registry database could not be opened, read or written."""


class ProviderError(CumuloError):
    """A compute backend (local, ssh, gateway, cloud) refused or failed a request."""


class EnvironmentSyncError(ProviderError):
    """The notebook's packages could not be installed where the workers run; names the package and host."""


class CapacityError(ProviderError):
    """The provider has no capacity for the requested shape where it was asked."""


class QuotaError(ProviderError):
    """An account quota or limit at the provider was reached."""


class AccountError(ProviderError):
    """The provider account itself cannot launch (a billing address missing, an inactive account); the
    message names what to fix on the account. Not a credentials problem: the key was accepted."""


class RateLimited(ProviderError):
    """The provider rate-limited us and retries were exhausted."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LaunchTimeout(ProviderError, TimeoutError):
    """An instance, scheduler or worker did not become ready in time."""


class TerminateError(ProviderError):
    """Termination could not be confirmed: resources may still be running and billing."""


class BudgetExceeded(CumuloError):
    """A cluster reached its budget; the configured action (close, scale to zero, warn) ran."""


class MissingDependency(CumuloError, ImportError):
    """An optional package is missing; the message names the cumulo extra that installs it."""


class NoGPUWorkers(CumuloError):
    """GPU work was requested but no worker of the cluster sees a GPU."""


class Described(Protocol):
    """What an error needs of the things it lists: a line of text (e.g. :class:`cumulo.share.Refusal`).

    A protocol, so that this module, at the bottom of cumulo, imports none of cumulo's others.
    """

    def text(self) -> str:
        """One line that says what and where."""
        ...


class ShareRefused(CumuloError):
    """A secret sits where it cannot be removed safely; nothing was written. ``refusals`` says where."""

    def __init__(self, path: PurePath, refusals: Sequence[Described]) -> None:
        self.refusals = refusals
        lines = "; ".join(r.text() for r in refusals)
        super().__init__(
            f"refusing to share {path.name}: {lines}. Nothing was written. Remove or change that part of "
            "the notebook by hand (an output, an attachment, encoded data, or a field cumulo does not "
            "redact such as a cell id), or pass --strip-outputs when it is an output, and try again.")


class RemoteError(CumuloError):
    """Code that cumulo ran on a worker raised.

    The message holds the worker-side traceback as text (the exception object itself
    may not unpickle on the client), also kept in ``remote_traceback``; IPython shows
    it instead of the local frames of cumulo's machinery.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_traceback: str = "",
        remote_type: str = "",
        worker: str | None = None,
    ) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback
        self.remote_type = remote_type
        self.worker = worker

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing cumulo's own (uninteresting) frames;
        # the message already holds the remote traceback.
        return f"{type(self).__name__}: {self}".splitlines()


class TrainingError(RemoteError):
    """A rank of a distributed training job raised; ``rank`` says which one."""

    def __init__(self, message: str, *, rank: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.rank = rank


# Not in __all__ (which lists the errors only): the message helper every "unknown X" error uses.
def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'lambda'?)' for the choice nearest to a misspelt ``word``; '' when none is near.

    Case is ignored; the suffix goes at the end of an "unknown ..." message.
    """
    if not isinstance(word, str):
        return ""
    by_lower = {str(c).lower(): str(c) for c in choices}
    near = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[near[0]]!r}?)" if near else ""
