"""One SSH connection to a host, with asyncssh's failures turned into cumulo's errors.

Host keys are checked against known_hosts (``cumulo.ssh.known-hosts``, else
~/.ssh/known_hosts): an unknown or changed key is refused with its fingerprint
and the command that would trust it, never accepted silently. Keys come from
the SSH agent, ~/.ssh/config and the default identity files, plus
``cumulo.ssh.key-file`` when set. No secret is read into cumulo's own state.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path
from types import TracebackType
from typing import Any

from dask.utils import parse_timedelta

from ... import config
from ...exceptions import ConnectError, CredentialsError, HostKeyRefused, MissingDependency, ProviderError
from .target import Host

__all__ = ["Session", "open_session"]


def _asyncssh() -> Any:
    try:
        import asyncssh
    except ImportError:
        raise MissingDependency("ssh:// clusters need asyncssh: pip install 'cumulo[ssh]'") from None
    return asyncssh


def _known_hosts() -> str:
    path = config.get("ssh.known-hosts") or os.path.expanduser("~/.ssh/known_hosts")
    return str(path)


class Session:
    """An open SSH connection; ``run`` executes a shell command, ``put``/``read`` move files over SFTP."""

    def __init__(self, host: Host, conn: Any) -> None:
        self.host = host
        self._conn = conn
        self.home = ""

    async def run(self, command: str, *, timeout: float = 60.0, check: bool = True, what: str = "") -> str:
        """Run ``command`` under sh; its stdout. ProviderError naming the host when it fails and ``check``."""
        try:
            done = await asyncio.wait_for(self._conn.run(command, check=False), timeout)
        except asyncio.TimeoutError:
            raise ProviderError(f"{what or 'a command'} on {self.host.label} did not finish within {timeout:g}s") \
                from None
        if check and done.exit_status != 0:
            tail = "\n  ".join(str(done.stderr or done.stdout).strip().splitlines()[-8:])
            raise ProviderError(f"{what or 'a command'} failed on {self.host.label} (exit {done.exit_status}):\n  {tail}")
        return str(done.stdout or "")

    async def put(self, files: list[Path], remote_dir: str, *, mode: int = 0o600) -> None:
        """Copy ``files`` into ``remote_dir`` (created, mode 700) over SFTP, each file with ``mode``."""
        await self.run(f"mkdir -p {shlex.quote(remote_dir)} && chmod 700 {shlex.quote(remote_dir)}", what="mkdir")
        async with self._conn.start_sftp_client() as sftp:
            for f in files:
                target = f"{remote_dir}/{f.name}"
                await sftp.put(str(f), target)
                await sftp.chmod(target, mode)

    async def read(self, path: str) -> str | None:
        """A remote file's text, or None when it does not exist (yet)."""
        async with self._conn.start_sftp_client() as sftp:
            try:
                async with sftp.open(path, "r") as fh:
                    return str(await fh.read())
            except _asyncssh().SFTPNoSuchFile:
                return None

    async def close(self) -> None:
        self._conn.close()
        try:
            await asyncio.wait_for(self._conn.wait_closed(), 5)
        except (asyncio.TimeoutError, OSError):
            pass

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


async def _fingerprint(host: Host) -> str:
    try:
        key = await asyncio.wait_for(_asyncssh().get_server_host_key(host.host, host.port), 10)
        return str(key.get_fingerprint()) if key is not None else "unknown"
    except Exception:
        return "unknown"


async def open_session(host: Host) -> Session:
    """Connect and log in to ``host``; ConnectError / HostKeyRefused / CredentialsError say what to do."""
    asyncssh = _asyncssh()
    timeout = float(parse_timedelta(config.get("ssh.connect-timeout")))
    known = _known_hosts()
    options: dict[str, Any] = {"port": host.port, "known_hosts": known, "connect_timeout": timeout}
    if host.user:
        options["username"] = host.user
    key_file = config.get("ssh.key-file")
    if key_file:
        if not os.path.isfile(os.path.expanduser(str(key_file))):
            raise CredentialsError(f"cumulo.ssh.key-file {key_file!r} does not exist: point it at your private key "
                                   "or unset it to use the SSH agent and ~/.ssh")
        options["client_keys"] = [os.path.expanduser(str(key_file))]
    if not os.path.exists(known):
        options["known_hosts"] = ()  # an empty trust list: every key is unknown, so it is refused below
    try:
        conn = await asyncssh.connect(host.host, **options)
    except asyncssh.HostKeyNotVerifiable:
        fp = await _fingerprint(host)
        hostspec = host.host if host.port == 22 else f"[{host.host}]:{host.port}"
        raise HostKeyRefused(
            f"the SSH host key of {host.label} is not in {known} (or has changed): its fingerprint is {fp}. "
            f"If that is the host's key (ask its admin), trust it with `ssh-keyscan -p {host.port} {host.host} "
            f">> {known}` and check the fingerprint with `ssh-keygen -lf {known} -F '{hostspec}'`; cumulo never "
            "accepts unknown host keys"
        ) from None
    except asyncssh.PermissionDenied:
        raise CredentialsError(
            f"{host.label} refused every SSH key offered for user {host.user or '(from ~/.ssh/config)'}: add your "
            "key to the SSH agent (ssh-add), set cumulo.ssh.key-file, or check the user name in the target"
        ) from None
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        raise ConnectError(f"cannot reach {host.label} over SSH: {reason}. Check the host name and port, and that "
                           "`ssh` to it works from this machine") from None
    session = Session(host, conn)
    try:
        session.home = (await session.run("printf %s \"$HOME\"", what="reading $HOME")).strip()
    except BaseException:
        await session.close()
        raise
    return session
