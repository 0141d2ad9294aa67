"""In CI, a skipped test is a failed one, unless it needs a GPU: a missing real part must not pass unseen.

sshd, Chromium, dask-gateway-server and the test extras are the only end-to-end coverage of whole
providers and of the sidebar; a broken install used to turn them into a skip count that nobody read.
Where ``CI`` is set (``.ci/run`` runs with ``CI=true``) or ``CUMULO_TEST_REQUIRE_ALL=1``, a skip of a test
or of a whole module (``pytest.importorskip`` at import) is reported as a failure carrying the skip's reason;
only tests marked ``gpu`` may skip there. Elsewhere (a developer's machine without sshd) skips stay skips.
Loaded by tests/conftest.py; ``-p tests.require_all`` loads it into another pytest run.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport", "required"]


def required() -> bool:
    """Whether every real part is required (CI, or CUMULO_TEST_REQUIRE_ALL=1)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("CUMULO_TEST_REQUIRE_ALL") == "1"


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail(report: Any) -> None:
    report.longrepr = ("skipped where every real part is required (CI, or CUMULO_TEST_REQUIRE_ALL=1); install "
                       f"what it needs (scripts/test does, as root): {_reason(report)}")
    report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and required() and "gpu" not in item.keywords and not hasattr(report, "wasxfail"):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and required():
        _fail(report)
