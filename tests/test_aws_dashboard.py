"""An AWS head's Dask dashboard through the Jupyter server, over SSH to the head (tests/head_dashboard.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest

import cumulo

from . import sshd
from .aws_emulator import AwsEmulator
from .aws_support import no_aws_leftovers, serving  # noqa: F401 - the invariant after each test
from .head_dashboard import check_head_dashboard
from .test_jupyter_handlers import on_server_loop
from .test_ssh import server, ssh  # noqa: F401 - the real sshd's throw-away user stands in for the image's

from pytest_jupyter.jupyter_server import *  # noqa: E402,F403 - pytest-jupyter's fixtures, for this module only

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"cumulo.jupyter": True}}}


@pytest.fixture
def aws(ssh: sshd.SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEmulator]:  # noqa: F811
    """The EC2 emulator with an sshd on each instance its security group lets SSH into, whose login user is the test sshd's throw-away user."""
    with serving(tmp_path, monkeypatch, ssh_user=ssh.user) as emu:
        with dask.config.set({"cumulo.cloud.ssh-user": ssh.user}):
            yield emu


@on_server_loop
async def test_an_aws_heads_dashboard_through_the_server_over_ssh_with_the_host_key_it_reported(
    jp_fetch: Any, jp_serverapp: Any, aws: AwsEmulator, ssh: sshd.SSHServer, tmp_path: Path  # noqa: F811
) -> None:
    head = cumulo.connect("aws", name="dash-head", gpu="A10G", workers=1)
    try:
        await check_head_dashboard(jp_fetch, jp_serverapp, head, user=ssh.user, ssh_root=aws._ssh_root,
                                   tmp_path=tmp_path)
    finally:
        head.close()
