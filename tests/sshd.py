"""A real OpenSSH server on loopback for the ssh:// tests, with a throw-away user.

Needs root (sshd, useradd) and Debian's openssh-server (scripts/test installs it).
The user's Python is the system's /usr/bin/python3, which has none of the
test's packages, so whatever the workers import was really installed by cumulo.
Host and client keys are made for the run; known_hosts holds only this host.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def why_unavailable() -> str | None:
    """None when a real sshd can run here; otherwise why the ssh tests skip."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to run sshd and create a throw-away user"
    for tool in (SSHD, "/usr/sbin/useradd", "/usr/bin/ssh-keygen"):
        if not os.path.exists(tool):
            return f"needs {tool} (apt-get install openssh-server)"
    return None


@dataclass
class SSHServer:
    port: int
    user: str
    home: Path
    client_key: Path
    known_hosts: Path
    host_public_key: str
    process: subprocess.Popen[bytes]
    #: False for a second sshd serving another server's user (see :func:`another`): stop() leaves the user
    owns_user: bool = True

    @property
    def target(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def user_processes(self) -> list[str]:
        """Command lines of the throw-away user's processes (what a cluster left running)."""
        out = subprocess.run(["ps", "-u", self.user, "-o", "args="], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.strip() and "<defunct>" not in line]

    def kill_user_processes(self) -> None:
        subprocess.run(["pkill", "-KILL", "-u", self.user], check=False)


#: useradd/usermod/userdel fail at once ("cannot lock /etc/passwd") when two test processes (pytest-xdist
#: workers) change users together: they take turns on this lock.
_USERS_LOCK = ("flock", "/tmp/cumulo-test-users.lock")


def start(tmp: Path, port: int) -> SSHServer:
    """Start sshd on 127.0.0.1:``port`` with a new user; stop with :func:`stop`."""
    tmp.mkdir(parents=True, exist_ok=True)
    user = f"cumulo-t{secrets.token_hex(3)}"
    subprocess.run([*_USERS_LOCK, "useradd", "-m", "-s", "/bin/sh", user], check=True)
    subprocess.run([*_USERS_LOCK, "usermod", "-p", "*", user], check=True)  # unlocked, with no password
    home = Path(pwd.getpwnam(user).pw_dir)
    host_key, client_key = tmp / "host_ed25519", tmp / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    shutil.chown(ssh_dir, user, user)
    shutil.chown(ssh_dir / "authorized_keys", user, user)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # the host's own uv configuration, as its admin would write it: this machine's package index is
    # reached through a TLS proxy whose CA is in the system store, which uv reads with native-tls
    uv_conf = home / ".config" / "uv"
    uv_conf.mkdir(parents=True, exist_ok=True)
    (uv_conf / "uv.toml").write_text("native-tls = true\n")
    subprocess.run(["chown", "-R", f"{user}:{user}", str(home / ".config")], check=True)
    host_public = host_key.with_suffix(".pub").read_text().split()
    return _serve(tmp, port, user, home, host_key, client_key, f"{host_public[0]} {host_public[1]}", sftp=True,
                  owns_user=True)


def another(server: SSHServer, tmp: Path, port: int, *, sftp: bool) -> SSHServer:
    """A second sshd on ``port`` for ``server``'s user, home and keys (its venvs are reused), e.g. without the
    sftp subsystem, as hardened hosts run; stop it with :func:`stop` (the user stays)."""
    tmp.mkdir(parents=True, exist_ok=True)
    host_key = server.known_hosts.parent / "host_ed25519"
    return _serve(tmp, port, server.user, server.home, host_key, server.client_key, server.host_public_key,
                  sftp=sftp, owns_user=False)


def _serve(tmp: Path, port: int, user: str, home: Path, host_key: Path, client_key: Path, host_public: str, *,
           sftp: bool, owns_user: bool) -> SSHServer:
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    config = _config(tmp, "127.0.0.1", port, user, host_key, ".ssh/authorized_keys", sftp=sftp)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "sshd.log", "wb"))
    server = SSHServer(port, user, home, client_key, known, host_public, proc, owns_user)
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    stop(server)
    raise RuntimeError(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-2000:]}")


def _config(folder: Path, address: str, port: int, user: str, host_key: Path, authorized: str, *,
            sftp: bool) -> Path:
    """Write the sshd_config of a server on ``address:port`` that lets only ``user`` in, by key only."""
    config = folder / "sshd_config"
    config.write_text(f"""ListenAddress {address}
Port {port}
HostKey {host_key}
PidFile {folder / 'sshd.pid'}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {authorized}
AllowUsers {user}
""" + ("Subsystem sftp internal-sftp\n" if sftp else ""))
    Path("/run/sshd").mkdir(exist_ok=True)
    return config


def instance_command(folder: Path, address: str, user: str, authorized_keys: str) -> tuple[str, Path, int]:
    """An emulated cloud instance's own sshd, as its image would run one: a fresh host key, ``user`` let in with
    ``authorized_keys`` (what the cloud installs from the key named at launch), listening on the instance's
    ``address``. Returns the shell command that runs it in the foreground (for the instance's process group),
    the host public key's path and the port. ``folder`` must be readable by ``user`` (sshd reads the keys as it)."""
    folder.mkdir(mode=0o755, parents=True)
    host_key = folder / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = folder / "authorized_keys"
    authorized.write_text(authorized_keys)
    authorized.chmod(0o644)
    import socket

    with socket.socket() as probe:  # a free port on the instance's address
        probe.bind((address, 0))
        port = probe.getsockname()[1]
    config = _config(folder, address, port, user, host_key, str(authorized), sftp=False)
    return f"{SSHD} -D -e -f {config} 2>>{folder / 'sshd.log'}", host_key.with_suffix(".pub"), port


def stop(server: SSHServer) -> None:
    """Stop sshd; when it made its user, also kill whatever the user still runs and remove the user and home."""
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)
    if not server.owns_user:
        return
    server.kill_user_processes()
    time.sleep(0.2)
    subprocess.run([*_USERS_LOCK, "userdel", "-r", "-f", server.user], check=False, capture_output=True)
