"""One SSH connection to a host, with asyncssh's failures turned into cumulo's errors.

Host keys are checked against known_hosts (``cumulo.ssh.known-hosts``, else
~/.ssh/known_hosts): an unknown or changed key is refused with its fingerprint
and the command that would trust it, never accepted silently. asyncssh is always
given that file by path: its default (``known_hosts=()``) would follow
``UserKnownHostsFile none`` in ~/.ssh/config and accept any key, so a missing
file is refused before any login. Keys come from the SSH agent, ~/.ssh/config
and the default identity files, plus ``cumulo.ssh.key-file`` when set. No secret
is read into cumulo's own state.

Files travel over exec channels (``cat`` on the host), not SFTP: hardened hosts
often serve no sftp subsystem, and every host cumulo uses runs a shell anyway.
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

__all__ = ["Session", "open_session", "open_sessions"]


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
    """An open SSH connection; ``run`` executes a shell command, ``put``/``read`` move files over exec channels."""

    def __init__(self, host: Host, conn: Any) -> None:
        self.host = host
        self._conn = conn
        self.home = ""

    async def _exec(self, command: str, *, timeout: float, what: str, **kwargs: Any) -> Any:
        """One command on its own channel, completed; ProviderError naming the host when it cannot run."""
        asyncssh = _asyncssh()
        try:
            return await asyncio.wait_for(self._conn.run(command, check=False, **kwargs), timeout)
        except asyncio.TimeoutError:
            raise ProviderError(f"{what or 'a command'} on {self.host.label} did not finish within {timeout:g}s") \
                from None
        except (asyncssh.Error, OSError) as exc:  # a refused channel (MaxSessions), a dropped connection
            reason = str(exc) or type(exc).__name__
            raise ProviderError(f"{what or 'a command'} could not run on {self.host.label}: {reason}. Check that "
                                "`ssh` to it runs commands, and the host's sshd log") from None

    async def run(self, command: str, *, timeout: float = 60.0, check: bool = True, what: str = "") -> str:
        """Run ``command`` under sh; its stdout. ProviderError naming the host when it fails and ``check``."""
        done = await self._exec(command, timeout=timeout, what=what)
        if check and done.exit_status != 0:
            tail = "\n  ".join(str(done.stderr or done.stdout).strip().splitlines()[-8:])
            raise ProviderError(f"{what or 'a command'} failed on {self.host.label} (exit {done.exit_status}):\n  {tail}")
        return str(done.stdout or "")

    async def put(self, files: list[Path], remote_dir: str, *, mode: int = 0o600, timeout: float = 600.0) -> None:
        """Copy ``files`` into ``remote_dir`` (created, mode 700), each file with ``mode``.

        Each file streams into ``cat`` on the host (no SFTP subsystem needed), written
        beside its target under umask 077 and renamed into place once complete, so a
        reader never sees half a file and nobody else can read it meanwhile."""
        q = shlex.quote
        await self.run(f"mkdir -p {q(remote_dir)} && chmod 700 {q(remote_dir)}", what="mkdir")
        for f in files:
            target = f"{remote_dir}/{f.name}"
            partial = f"{target}.cumulo-part"
            what = f"copying {f.name}"
            done = await self._exec(f"umask 077 && cat > {q(partial)} && chmod {mode:o} {q(partial)} && "
                                    f"mv -f {q(partial)} {q(target)}", timeout=timeout, what=what,
                                    stdin=f, encoding=None)
            if done.exit_status != 0:
                tail = (done.stderr or b"").decode(errors="replace").strip()
                raise ProviderError(f"{what} to {self.host.label}:{remote_dir} failed (exit {done.exit_status}): "
                                    f"{tail or 'no message'}. Check the free space and permissions there")

    async def read(self, path: str) -> str | None:
        """A remote file's text, or None when it does not exist (yet)."""
        q = shlex.quote
        done = await self._exec(f"[ -e {q(path)} ] || exit 3; cat {q(path)}", timeout=60.0, what=f"reading {path}")
        if done.exit_status == 3:
            return None
        if done.exit_status != 0:
            raise ProviderError(f"reading {path} on {self.host.label} failed (exit {done.exit_status}): "
                                f"{str(done.stderr or '').strip() or 'no message'}")
        return str(done.stdout or "")

    async def forward_local(self, remote_host: str, remote_port: int) -> Any:
        """Listen on a free port of this machine's loopback and forward each connection to
        ``remote_host:remote_port`` as the host sees it (``ssh -L``); the listener has ``get_port()``
        and ``close()``, and stops with the session. ProviderError naming the host when refused."""
        asyncssh = _asyncssh()
        try:
            return await self._conn.forward_local_port("127.0.0.1", 0, remote_host, remote_port)
        except (asyncssh.Error, OSError) as exc:
            raise ProviderError(f"{self.host.label} refused a port forward to {remote_host}:{remote_port}: "
                                f"{exc or type(exc).__name__}. Check AllowTcpForwarding in its sshd_config") from None

    @property
    def is_open(self) -> bool:
        """Whether the connection is still up (a dropped one is not reused)."""
        return not self._conn.is_closed()

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


async def _refused(host: Host, known: str, why: str) -> HostKeyRefused:
    """The refusal of ``host``'s key: ``why``, the key's fingerprint, and the commands that would trust it."""
    fp = await _fingerprint(host)
    hostspec = host.host if host.port == 22 else f"[{host.host}]:{host.port}"
    folder = os.path.dirname(known) or "."
    return HostKeyRefused(
        f"the SSH host key of {host.label} {why}: its fingerprint is {fp}. If that is the host's key (ask its "
        f"admin), trust it with `mkdir -p {shlex.quote(folder)} && ssh-keyscan -p {host.port} {host.host} >> "
        f"{shlex.quote(known)}` and check the fingerprint with `ssh-keygen -lf {shlex.quote(known)} -F "
        f"'{hostspec}'` (or point cumulo.ssh.known-hosts at a known_hosts file that has it); cumulo never "
        "accepts unknown host keys")


async def open_session(host: Host) -> Session:
    """Connect and log in to ``host``; ConnectError / HostKeyRefused / CredentialsError say what to do.

    The host key is checked against the known_hosts file by path, always: a file that
    does not exist is a HostKeyRefused before any login (asyncssh's own default would
    follow ``UserKnownHostsFile none`` in ~/.ssh/config and check nothing)."""
    asyncssh = _asyncssh()
    timeout = float(parse_timedelta(config.get("ssh.connect-timeout")))
    if host.host_keys:
        return await _open_launched(host, timeout)
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
    if not os.path.isfile(known):
        raise await _refused(host, known, f"cannot be checked: {known} does not exist")
    try:
        conn = await asyncssh.connect(host.host, **options)
    except asyncssh.HostKeyNotVerifiable:
        raise await _refused(host, known, f"is not in {known} (or has changed)") from None
    except asyncssh.PermissionDenied:
        raise CredentialsError(
            f"{host.label} refused every SSH key offered for user {host.user or '(from ~/.ssh/config)'}: add your "
            "key to the SSH agent (ssh-add), set cumulo.ssh.key-file, or check the user name in the target"
        ) from None
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        raise _unreachable(host, exc) from None
    return await _session(host, conn)


def _unreachable(host: Host, exc: BaseException) -> ConnectError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
    return ConnectError(f"cannot reach {host.label} over SSH: {reason}. Check the host name and port, and that "
                        "`ssh` to it works from this machine")


async def _open_launched(host: Host, timeout: float) -> Session:
    """Log in to a host cumulo launched: only its recorded host keys are trusted, only its own key is offered."""
    asyncssh = _asyncssh()
    try:
        trusted = [asyncssh.import_public_key(line) for line in host.host_keys]
    except (asyncssh.KeyImportError, ValueError):
        raise HostKeyRefused(f"the host keys recorded for {host.label} cannot be read; this cluster's SSH "
                             "access cannot be checked (stop it and start a new one)") from None
    if not host.key_file or not os.path.isfile(host.key_file):
        raise CredentialsError(f"the cluster's own SSH key for {host.label} ({host.key_file or 'not recorded'}) is "
                               "gone from this machine: only the machine that launched the cluster can log in to it")
    options: dict[str, Any] = {"port": host.port, "known_hosts": (trusted, [], []), "connect_timeout": timeout,
                               "client_keys": [host.key_file], "agent_path": None, "config": None}
    if host.user:
        options["username"] = host.user
    try:
        conn = await asyncssh.connect(host.host, **options)
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyRefused(
            f"the SSH host key of {host.label} is not the one its head reported over the cluster's TLS when it "
            f"started (its fingerprint is {await _fingerprint(host)}): something else answers at that address. "
            "cumulo does not log in; stop the cluster if you did not expect this") from None
    except asyncssh.PermissionDenied:
        raise CredentialsError(
            f"{host.label} refused the cluster's own SSH key for user {host.user}: set the image's login user "
            "with cumulo.cloud.ssh-user") from None
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        raise _unreachable(host, exc) from None
    return await _session(host, conn)


async def _session(host: Host, conn: Any) -> Session:
    session = Session(host, conn)
    try:
        session.home = (await session.run("printf %s \"$HOME\"", what="reading $HOME")).strip()
    except BaseException:
        await session.close()
        raise
    return session


async def open_sessions(hosts: list[Host]) -> list[Session]:
    """A session to each of ``hosts`` (in order), opened at once; all or none.

    When any host fails (or the caller is cancelled), the sessions that did open are
    closed before the first host's error is raised, so no connection is left behind."""
    tasks = [asyncio.ensure_future(open_session(h)) for h in hosts]
    try:
        await asyncio.wait(tasks)
    except BaseException:  # cancelled while connecting: stop the rest, close what opened
        for t in tasks:
            t.cancel()
        await asyncio.shield(_close_opened(tasks))
        raise
    errors = [e for t in tasks if (e := t.exception()) is not None]
    if errors:
        await _close_opened(tasks)
        raise errors[0]
    return [t.result() for t in tasks]


async def _close_opened(tasks: list[asyncio.Future[Session]]) -> None:
    """Wait for every connect to end, then close the sessions among them that opened."""
    await asyncio.wait(tasks)
    opened = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
    await asyncio.gather(*(s.close() for s in opened), return_exceptions=True)
