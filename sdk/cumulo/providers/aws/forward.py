"""``forward_credentials=True``: the notebook's short-lived AWS credentials, kept fresh in the workers' memory.

The default is that workers read S3 with their own identity (``iam_instance_profile=``): nothing of the
notebook's reaches them. Forwarding is for a team without such a role. Only short-lived credentials go:
long-lived keys (an IAM user's) are exchanged for an STS session (``GetSessionToken``, ``cumulo.aws.
forward-duration``); credentials that are already temporary (SSO, an assumed role) go as they are, and
are re-read from boto3, which refreshes them, before they expire. They reach the workers as the process
environment of each worker (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``:
what boto3, s3fs and pyarrow read), over the cluster's TLS link by ``client.run``: never in the first-boot
script, the registry, the scheduler's plugins or a log line. Workers that join later get them at the next
pass (every ``cumulo.aws.forward-check``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dask.utils import parse_timedelta

from ... import config
from ...exceptions import CredentialsError
from .api import _ERRORS, Aws, translate

__all__ = ["Forwarder", "Session", "session_credentials"]

logger = logging.getLogger("cumulo.aws")

_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Session:
    """Short-lived credentials and when they expire (epoch seconds). Never printed: no repr of the secrets."""

    access_key: str
    secret_key: str
    token: str
    expires: float

    def __repr__(self) -> str:
        return f"Session(expires={dt.datetime.fromtimestamp(self.expires, dt.timezone.utc):%H:%M:%S} UTC)"

    def environment(self) -> dict[str, str]:
        return dict(zip(_NAMES, (self.access_key, self.secret_key, self.token), strict=True))


@contextlib.contextmanager
def _unlogged_bodies() -> Iterator[None]:
    """botocore logs response bodies at DEBUG; GetSessionToken's holds the new secret: keep it out of any log."""
    loggers = [logging.getLogger(name) for name in ("botocore.parsers", "botocore.endpoint")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.INFO))
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def session_credentials(aws: Aws, *, duration: float) -> Session:
    """The notebook's credentials as a short-lived session (blocking: boto3)."""
    creds = aws.session.get_credentials()
    if creds is None:
        raise CredentialsError("forward_credentials=True needs AWS credentials in the notebook (AWS_PROFILE, "
                               "`aws sso login` or environment variables); or give the workers a role with "
                               "iam_instance_profile= instead (docs/aws.md)")
    frozen = creds.get_frozen_credentials()
    if frozen.token:  # already temporary: boto3 refreshes them; re-read well before they lapse
        expiry = getattr(creds, "_expiry_time", None)
        expires = expiry.timestamp() if isinstance(expiry, dt.datetime) else time.time() + 900
        return Session(frozen.access_key, frozen.secret_key, frozen.token, expires)
    sts = aws.client("sts", aws.default_region)
    try:
        with _unlogged_bodies():
            answer = sts.get_session_token(DurationSeconds=int(duration))
    except _ERRORS as exc:
        raise translate(exc, "GetSessionToken (forward_credentials=True)") from None
    c = answer["Credentials"]
    return Session(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], c["Expiration"].timestamp())


def _install(env: dict[str, str]) -> None:
    """On a worker: the credentials into this process's environment, where boto3, s3fs and pyarrow look."""
    os.environ.update(env)


class Forwarder:
    """Keeps the workers' forwarded credentials fresh while the cluster's client runs; see the module docstring."""

    def __init__(self, client: Any, *, aws: Aws | None = None) -> None:
        self.client = client
        self.aws = aws or Aws()
        self.duration = float(parse_timedelta(config.get("aws.forward-duration")))
        self.check = float(parse_timedelta(config.get("aws.forward-check")))
        self.session: Session | None = None
        self._sent: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Send the first credentials (failing the call if there are none), then keep them fresh."""
        await self.push()
        self._task = asyncio.ensure_future(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def push(self) -> None:
        """Send credentials to the workers that lack the current ones (all of them after a refresh)."""
        if self.session is None or self.session.expires - time.time() < max(300.0, self.duration / 4):
            self.session = await asyncio.to_thread(session_credentials, self.aws, duration=self.duration)
            self._sent = set()
        workers = set((await self.client.scheduler.identity())["workers"])
        missing = sorted(workers - self._sent)
        if missing:
            await self.client.run(_install, self.session.environment(), workers=missing)
            self._sent |= set(missing)
            logger.info("forwarded short-lived AWS credentials (until %r) to %d worker(s)", self.session, len(missing))

    async def _loop(self) -> None:
        while self.client.status == "running":
            due = time.monotonic() + self.check
            while self.client.status == "running" and time.monotonic() < due:
                await asyncio.sleep(min(1.0, self.check))  # ends within a second of the client closing
            if self.client.status != "running":
                return
            try:
                await self.push()
            except Exception as exc:  # the workers keep the last credentials until they lapse; say why
                logger.warning("cumulo: could not refresh the workers' AWS credentials: %s", exc)
