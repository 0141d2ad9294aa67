"""API keys for cloud providers, found without ever being shown.

A key is looked up, in order, in an environment variable, a file readable by
the user alone, and the system keyring (when the ``keyring`` package is
importable). It is returned wrapped in :class:`Secret`, whose ``repr``/``str``
show at most the last four characters and which refuses to be pickled (so it
cannot travel into a Dask task graph, a registry row or a notebook output by
accident). Only :meth:`Secret.reveal` gives the value, and only the HTTP layer
calls it, to build an ``Authorization`` header.

A provider declares each credential it reads as a :class:`Credential` (its
environment variable, key-file setting, keyring service and, optionally, the
key's format); generic code then finds it (:func:`find`), removes its variable
from workers (local_security) and looks for it in notebooks (``cumulo share``)
without knowing the provider.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .. import config
from ..exceptions import CredentialsError

__all__ = ["Credential", "Secret", "find", "load_secret"]


class Secret:
    """A credential that never shows itself: repr, str and format give ``****abcd`` at most."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, *, source: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise CredentialsError(f"the credential from {source} is empty: put the key there, or unset it")
        self._value = value.strip()
        #: Where the key came from ("environment variable LAMBDA_API_KEY", a file path, "keyring"): safe to show.
        self.source = source

    def reveal(self) -> str:
        """The secret value. Call only to hand it to the provider's API, never to show or store it."""
        return self._value

    @property
    def hint(self) -> str:
        """The last four characters, the most cumulo ever shows of a key (fewer for very short keys)."""
        tail = self._value[-4:] if len(self._value) >= 12 else ""
        return f"****{tail}"

    def __repr__(self) -> str:
        return f"Secret({self.hint}, from {self.source})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("cumulo-secret", self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a cumulo Secret cannot be pickled or copied into a task graph; read it where it is used")


def _check_private(path: Path) -> None:
    """Refuse a key file that other users could read or that someone else owns."""
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"refusing the key file {path}: it is readable or writable by other users "
            f"(mode {stat.filemode(info.st_mode)}). Run `chmod 600 {path}` and try again."
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CredentialsError(
            f"refusing the key file {path}: it belongs to another user (uid {info.st_uid}). "
            "Use a key file you own, with mode 600."
        )


def load_secret(
    *,
    what: str,
    env_var: str | None = None,
    file: str | os.PathLike[str] | None = None,
    keyring_service: str | None = None,
    keyring_user: str = "default",
) -> Secret:
    """Find a credential in ``env_var``, then ``file`` (mode 600 required), then the keyring.

    ``what`` names the credential in error messages ("Lambda Cloud API key").
    Raises CredentialsError saying where it looked and how to provide one.
    """
    if env_var and os.environ.get(env_var, "").strip():
        return Secret(os.environ[env_var], source=f"environment variable {env_var}")
    if file is not None:
        path = Path(file).expanduser()
        if path.exists():
            _check_private(path)
            try:
                text = path.read_text()
            except OSError as exc:
                raise CredentialsError(f"cannot read the key file {path}: {exc.strerror}") from None
            return Secret(text, source=f"file {path}")
    if keyring_service:
        try:
            import keyring  # optional
        except ImportError:
            keyring = None
        if keyring is not None:
            try:
                value = keyring.get_password(keyring_service, keyring_user)
            except Exception as exc:  # keyring backends raise their own types
                raise CredentialsError(
                    f"the system keyring failed while looking up {what} ({type(exc).__name__}); "
                    f"set {env_var} instead"
                ) from None
            if value:
                return Secret(value, source=f"keyring {keyring_service}/{keyring_user}")
    places = []
    if env_var:
        places.append(f"set the environment variable {env_var}")
    if file is not None:
        places.append(f"write it to {Path(file).expanduser()} with mode 600")
    if keyring_service:
        places.append(f"store it with `keyring set {keyring_service} {keyring_user}` (needs the keyring package)")
    raise CredentialsError(f"no {what} found: " + "; or ".join(places) + ".")


@dataclass(frozen=True)
class Credential:
    """Where one provider credential is found, and what it looks like: declared by the provider.

    ``env_var`` is always removed from workers' environments and compared with a shared notebook's text;
    ``file_setting`` names the config key (``<section>.<key>``) of a key file, whose default is
    ``default_file`` in the user's config dir; ``keyring_service`` is tried last. ``pattern``, a regular
    expression of the key's format, lets ``cumulo share`` find such keys even when they are not yours.
    """

    what: str
    env_var: str
    file_setting: str | None = None
    default_file: str | None = None
    keyring_service: str | None = None
    pattern: str | None = None


def find(credential: Credential) -> Secret:
    """The credential from its environment variable, key file (mode 600) or keyring; CredentialsError
    saying where it looked otherwise."""

    file: Path | None = None
    configured = config.get(credential.file_setting) if credential.file_setting else None
    if configured:
        file = Path(configured)
    elif credential.default_file:
        import platformdirs

        file = Path(platformdirs.user_config_dir("cumulo", appauthor=False)) / credential.default_file
    return load_secret(what=credential.what, env_var=credential.env_var, file=file,
                       keyring_service=credential.keyring_service)
