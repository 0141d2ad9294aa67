"""The ``cumulo.lambda.*`` settings the provider reads, and where its progress lines go."""

from __future__ import annotations

import logging
from collections.abc import Callable

from dask.utils import parse_timedelta

from ... import config
from ...bootstrap import BootstrapOptions
from ..base import Say as BaseSay

__all__ = ["PROVIDER", "Say", "bootstrap_options", "certs_dir", "seconds"]

#: The provider's name in the registry (resources are keyed by it).
PROVIDER = "lambda"

logger = logging.getLogger("cumulo.lambda")


def seconds(key: str) -> float:
    """A duration setting (``cumulo.lambda.<key>``) in seconds."""
    return float(parse_timedelta(config.get(f"lambda.{key}")))


def certs_dir() -> str | None:
    """Where per-cluster TLS files (and a cluster's SSH private key) live; None: tlscerts' default."""
    return config.get("lambda.certs-dir") or None


def bootstrap_options() -> BootstrapOptions:
    """How instances are prepared at first boot, from config."""
    opts = BootstrapOptions(
        scheduler_port=int(config.get("lambda.scheduler-port")),
        worker_command=str(config.get("lambda.worker-command")),
        worker_args=str(config.get("lambda.worker-args") or ""),
        gpu_probe=bool(config.get("lambda.gpu-probe")),
        install_packages=bool(config.get("lambda.install-packages")),
        python=str(config.get("lambda.python")),
    )
    if not opts.gpu_probe:
        logger.warning("the GPU probe on workers is turned off (cumulo.lambda.gpu-probe=false)")
    return opts


class Say(BaseSay):
    """Progress lines of the Lambda provider: echoed to stderr when ``cumulo.lambda.print-progress``."""

    def __init__(self, callback: Callable[[str], None] | None = None) -> None:
        super().__init__(callback, echo=bool(config.get("lambda.print-progress")), logger=logger)
