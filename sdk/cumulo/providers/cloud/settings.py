"""The settings a cloud provider reads: ``cumulo.cloud.*`` shared by every cloud, its own ``cumulo.<name>.*``.

A provider's section holds what is its own (API URL, key file, region, its
request pacing, ``terminate-timeout``, ``poll-interval``, ``certs-dir``...). The
shared keys (:data:`SHARED`) live in ``cumulo.cloud.*``; a provider may override
one by declaring the same key in its own schema (its value, when not null, wins
for that provider). An old ``cumulo.lambda.*`` spelling of a shared key is
refused (cumulo.config.MOVED) before it could be silently ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dask.utils import parse_timedelta

from ... import config
from ..base import Say as BaseSay
from .bootstrap import BootstrapOptions

__all__ = ["SHARED", "CloudSay", "CloudSettings"]

#: Keys of ``cumulo.cloud.*``.
SHARED = frozenset({
    "worker-command", "worker-args", "gpu-probe", "install-packages", "python", "scheduler-port",
    "boot-timeout", "scheduler-timeout", "workers-timeout", "confirm-above-per-hour", "print-progress",
    "orphan-grace", "worker-death-timeout", "notice-poll", "ssh-user", "replace-taken-back",
})


class CloudSettings:
    """The settings of one cloud provider (``section``: its config section, its registry name)."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.logger = logging.getLogger(f"cumulo.{section}")

    def _overrides(self, key: str) -> bool:
        props = config.schema()["properties"].get(self.section, {}).get("properties", {})
        return key in props

    def key(self, key: str) -> str:
        """The full name of the setting that holds ``key`` for this provider, as messages name it."""
        if key in SHARED:
            if self._overrides(key) and config.get(f"{self.section}.{key}") is not None:
                return f"cumulo.{self.section}.{key}"
            return f"cumulo.cloud.{key}"
        return f"cumulo.{self.section}.{key}"

    def get(self, key: str) -> Any:
        """The value of ``key``: shared keys from ``cumulo.cloud.*`` unless the provider overrides them."""
        if key in SHARED:
            config.refuse_moved(self.section)
        return config.get(self.key(key).removeprefix("cumulo."))

    def seconds(self, key: str) -> float:
        """A duration setting in seconds."""
        return float(parse_timedelta(self.get(key)))

    def certs_dir(self) -> str | None:
        """Where per-cluster TLS files (and a cluster's SSH private key) live; None: tlscerts' default."""
        return self.get("certs-dir") or None

    def bootstrap_options(self) -> BootstrapOptions:
        """How instances are prepared at first boot."""
        opts = BootstrapOptions(
            scheduler_port=int(self.get("scheduler-port")),
            worker_command=str(self.get("worker-command")),
            worker_args=str(self.get("worker-args") or ""),
            gpu_probe=bool(self.get("gpu-probe")),
            install_packages=bool(self.get("install-packages")),
            python=str(self.get("python")),
            death_timeout=int(self.seconds("worker-death-timeout")),
            notice_poll=self.seconds("notice-poll"),
        )
        if not opts.gpu_probe:
            self.logger.warning("the GPU probe on workers is turned off (%s=false)", self.key("gpu-probe"))
        return opts

    def say(self, callback: Callable[[str], None] | None = None) -> CloudSay:
        """Where this provider's progress lines go."""
        return CloudSay(callback, settings=self)


class CloudSay(BaseSay):
    """A cloud provider's progress lines: echoed to stderr when ``print-progress`` is on."""

    def __init__(self, callback: Callable[[str], None] | None = None, *, settings: CloudSettings) -> None:
        super().__init__(callback, echo=bool(settings.get("print-progress")), logger=settings.logger)
