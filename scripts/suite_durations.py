"""Per-file wall time of a test run, from pytest's JUnit XML: where the suite's minutes go.

    python scripts/suite_durations.py test-artifacts/junit.xml [--top N]

Sums each test's setup, call and teardown time by file (pytest's ``--durations`` lists single
tests only). With pytest-xdist the files run on two workers, so the total is about twice the
wall time. .ci/run prints this after every run.
"""

from __future__ import annotations

import argparse
import collections
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def by_file(junit: Path) -> list[tuple[str, float, int]]:
    """(file, seconds, tests) for every test file in ``junit``, the slowest first."""
    seconds: dict[str, float] = collections.defaultdict(float)
    tests: dict[str, int] = collections.Counter()
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = (case.get("classname") or "").split(".")
        # classname is tests.test_x (or tests.test_x.Class): the module is the file
        module = next((i for i, part in enumerate(name) if part.startswith("test_")), len(name) - 1)
        path = "/".join(name[: module + 1]) + ".py"
        seconds[path] += float(case.get("time") or 0.0)
        tests[path] += 1
    return sorted(((f, s, tests[f]) for f, s in seconds.items()), key=lambda row: -row[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    if not args.junit.is_file():
        print(f"no JUnit XML at {args.junit}: run pytest with --junitxml={args.junit}", file=sys.stderr)
        return 2
    rows = by_file(args.junit)
    total = sum(s for _, s, _ in rows)
    print(f"test time by file ({len(rows)} files, {total:.0f} s summed over the xdist workers):")
    for path, secs, n in rows[: args.top]:
        print(f"  {secs:7.1f} s  {n:4d} tests  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
