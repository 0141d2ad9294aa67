"""`cumulo prices --refresh` for AWS: on-demand prices from the public price list (a loopback stand-in,
tests/aws_price_emulator.py), spot prices per zone from the EC2 emulator where credentials exist, the plan's
estimate using the refreshed price, a failed refresh keeping the old rows, and refused credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import dask
import moto.settings
import pandas as pd
import pytest
from cumulo.cost import catalog
from cumulo.providers.aws import AWSProvider
from cumulo.providers.aws.shapes import shapes
from cumulo.spec import ClusterSpec

from .aws_emulator import AwsEmulator
from .aws_price_emulator import PUBLISHED, AwsPriceList
from .aws_support import aws, no_aws_leftovers  # noqa: F401,F811  (fixtures)

pytestmark = pytest.mark.timeout(120)

#: The prices the price list states (not the bundled ones: g5.xlarge is 1.006 there, g6.xlarge 0.8048).
LISTED = {"us-east-1": {"g5.xlarge": 1.234, "g5.12xlarge": 5.5, "g6.xlarge": 0.777, "p5e.48xlarge": 77.7},
          "us-west-2": {"g5.xlarge": 1.111}}
TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")


@pytest.fixture
def price_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsPriceList]:
    """The price list emulator, with cumulo (here and in subprocesses) reading it and a cache of the test's own."""
    with AwsPriceList({r: dict(p) for r, p in LISTED.items()}) as emu:
        settings = {"AWS__PRICE_LIST_URL": emu.url, "CATALOG__CACHE_PATH": str(tmp_path / "prices-cache.json"),
                    "AWS__PRICE_REGIONS": json.dumps(["us-east-1", "us-west-2"])}
        for key, value in settings.items():
            monkeypatch.setenv(f"DASK_CUMULO__{key}", value)
        with dask.config.set({"cumulo.aws.price-list-url": emu.url,
                              "cumulo.catalog.cache-path": str(tmp_path / "prices-cache.json"),
                              "cumulo.aws.price-regions": ["us-east-1", "us-west-2"]}):
            yield emu


def _prices_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cumulo.cli", "prices", *args], capture_output=True, text=True,
                          timeout=90, env={**os.environ})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


_ROW = re.compile(r"^\s*aws\s+(?P<type>\S+)\s+(?P<gpus>\d+)x (?P<model>\S+)\s+(?P<per_gpu>\S+)\s+(?P<hourly>\S+)\s+"
                  r"(?P<spot>\S+)\s+(?P<region>\S+)\s+(?P<as_of>\d{4}-\d\d-\d\d \d\d:\d\d UTC|\S+)\s+(?P<source>.*)$")


def _table_rows(out: str, instance_type: str) -> list[dict[str, str]]:
    """The AWS rows of one instance type in `cumulo prices`' table, by column."""
    found = [_ROW.match(ln) for ln in out.splitlines()]
    return [m.groupdict() for m in found if m and m["type"] == instance_type]


def test_refresh_shows_aws_gpu_rows_with_source_and_date(aws: AwsEmulator, price_list: AwsPriceList) -> None:
    out = _prices_cli("--refresh", "--provider", "aws")
    assert re.search(r"^aws: \d+ offers refreshed$", out, re.M), out
    g5 = {r["region"]: r for r in _table_rows(out, "g5.xlarge") if r["region"] in ("us-east-1", "us-west-2")}
    # the plain on-demand Linux hour of each region, not a Windows, dedicated, reserved or capacity-block price
    assert {region: r["hourly"] for region, r in g5.items()} == {"us-east-1": "1.234", "us-west-2": "1.111"}, out
    for region, row in g5.items():
        assert row["as_of"] == TODAY and row["spot"] == "-"
        assert row["source"] == (f"{price_list.base}/offers/v1.0/aws/AmazonEC2/current/{region}/index.csv "
                                 f"(AWS price list published {PUBLISHED[:10]})")
    # GPU types the bundled list lacks come with their shape; a type without GPUs does not come at all
    p5e = _table_rows(out, "p5e.48xlarge")
    assert [(r["gpus"], r["model"], r["per_gpu"]) for r in p5e] == [("8", "H200", "9.713")], out  # 77.7 / 8 GPUs
    assert "m5.large" not in out
    assert sorted(price_list.requests) == [f"/offers/v1.0/aws/AmazonEC2/current/{r}/index.csv"
                                           for r in ("us-east-1", "us-west-2")]
    assert price_list.gzipped == 2  # read compressed, as AWS's CDN serves it


def test_spot_rows_per_zone_with_their_time(aws: AwsEmulator, price_list: AwsPriceList) -> None:
    aws.spot_prices["g6.xlarge"] = {"us-east-1a": 0.31, "us-east-1d": 0.29}
    aws.spot_prices["g5.xlarge"]["us-west-2b"] = 0.52
    before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    out = _prices_cli("--refresh", "--provider", "aws", "--gpu", "A10G")
    spot = {r["region"]: r for r in _table_rows(out, "g5.xlarge") if r["spot"] != "-"}
    assert {z: r["spot"] for z, r in spot.items()} == {"us-east-1a": "0.450", "us-east-1b": "0.380",
                                                       "us-east-1c": "0.410", "us-west-2b": "0.520"}, out
    for zone, row in spot.items():
        assert row["hourly"] == ("1.234" if zone.startswith("us-east-1") else "1.111")  # the region's on-demand
        stamp = datetime.strptime(row["as_of"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=timezone.utc)
        assert stamp >= before, row
        assert row["source"].startswith(f"spot price of {zone} since {row['as_of']} (DescribeSpotPriceHistory"), row
    assert "spot prices need" not in out and "not fetched" not in out
    # an estimate's or an offer's reading of the catalog never meets a zone's row; `cumulo prices` shows them
    assert set(catalog.prices(provider="aws")["region"]) == {"us-east-1", "us-west-2"}
    assert {"us-east-1a", "us-west-2b"} <= set(catalog.prices(provider="aws", zones=True)["region"])
    # a region's filter shows its zones too, and zones only of the types priced there
    east = _prices_cli("--provider", "aws", "--region", "us-east-1", "--gpu", "L4")
    assert {(r["region"], r["spot"]) for r in _table_rows(east, "g6.xlarge")} == {
        ("us-east-1", "-"), ("us-east-1a", "0.310"), ("us-east-1d", "0.290")}, east


def test_the_plan_estimates_with_the_refreshed_on_demand_price(aws: AwsEmulator, price_list: AwsPriceList,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cumulo.aws")
    report = catalog.refresh(sources=("aws",))
    assert report.ok.get("aws"), report.text()

    def offer(**kw: object) -> str:
        caplog.clear()
        asyncio.run(AWSProvider().preflight(ClusterSpec(provider="aws", gpu="A10G", workers=2, **kw)))
        return next(r.getMessage() for r in caplog.records if r.getMessage().startswith("offer:"))

    west = offer(spot=False, region="us-west-2")
    assert "$1.111/h (on-demand price fetched by `cumulo prices --refresh` from" in west, west
    assert "may differ" not in west and "estimated $2.22/h" in west, west  # the region's own price, not us-east-1's
    # us-east-1 has spot rows of its zones in the catalog now: the head's on-demand price is still the region's
    east = offer(spot=True, region="us-east-1")
    assert re.search(r"head us-east-1\w, on-demand, \$1\.234/h \(on-demand price fetched by `cumulo prices "
                     r"--refresh` from \S+/us-east-1/index.csv", east), east
    assert "may differ" not in east and "us-east-1b, spot, $0.38/h" in east, east
    assert not aws.live()


def test_a_failed_refresh_keeps_the_old_rows_and_says_why(aws: AwsEmulator, price_list: AwsPriceList) -> None:
    assert catalog.refresh(sources=("aws",)).ok.get("aws")
    price_list.fail = True
    out = _prices_cli("--refresh", "--provider", "aws", "--gpu", "A10G")
    failed = [ln for ln in out.splitlines() if ln.startswith("aws: FAILED")]
    assert len(failed) == 1 and "HTTP 500" in failed[0] and "keeping the last good data" in failed[0], out
    assert {(r["region"], r["hourly"]) for r in _table_rows(out, "g5.xlarge") if r["spot"] == "-"} == {
        ("us-east-1", "1.234"), ("us-west-2", "1.111")}, out
    assert catalog.price_of("aws", "g5.xlarge", "us-west-2") == pytest.approx(1.111)


def test_bad_credentials_still_give_on_demand_rows_and_one_line(
    aws: AwsEmulator, price_list: AwsPriceList, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Wr0ngSecretKeyThatMustNeverBePrinted0123"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGPRICESKEY00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys, as AWS does
    out = _prices_cli("--refresh", "--provider", "aws", "--gpu", "A10G")
    refreshed = [ln for ln in out.splitlines() if ln.startswith("aws: ") and "refreshed" in ln]
    assert len(refreshed) == 1 and re.fullmatch(
        r"aws: \d+ offers refreshed; spot prices not fetched \(CredentialsError: .*AuthFailure.*\); on-demand only",
        refreshed[0]), out
    assert secret not in out and "AKIAWRONGPRICESKEY00" not in out
    assert secret not in Path(dask.config.get("cumulo.catalog.cache-path")).read_text()
    rows = _table_rows(out, "g5.xlarge")
    assert {r["region"] for r in rows} == {"us-east-1", "us-west-2"} and {r["spot"] for r in rows} == {"-"}, out


def test_no_credentials_give_on_demand_rows_and_say_spot_needs_them(
    aws: AwsEmulator, price_list: AwsPriceList, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    out = _prices_cli("--refresh", "--provider", "aws", "--gpu", "A10G")
    assert re.search(r"^aws: \d+ offers refreshed; spot prices need AWS credentials \(.*\); on-demand only$",
                     out, re.M), out
    assert {(r["region"], r["hourly"]) for r in _table_rows(out, "g5.xlarge")} == {
        ("us-east-1", "1.234"), ("us-west-2", "1.111")}, out


def test_a_zones_spot_row_never_stands_for_a_regions_price(aws: AwsEmulator) -> None:
    """A region the catalog has no row for falls back to another region's on-demand row, never to a zone's."""
    row = {"provider": "aws", "instance_type": "g5.xlarge", "gpu_model": "A10G", "gpu_count": 1, "gpu_memory_gb": 24,
           "vcpus": 4, "ram_gb": 16, "on_demand_per_hour": 1.234, "spot_per_hour": None, "source": "list",
           "as_of": TODAY}
    frame = pd.DataFrame([{**row, "region": "us-east-1a", "spot_per_hour": 0.45, "source": "spot price"},
                          {**row, "region": "us-east-1"}])
    found = shapes(frame, "eu-west-1")["g5.xlarge"]
    assert (found.price_region, found.price_source, found.on_demand) == ("us-east-1", "list", 1.234)
    assert shapes(frame.iloc[:1], "us-east-1") == {}  # a spot row alone prices nothing on demand


def test_a_profile_that_does_not_exist_gives_on_demand_rows_and_one_line(
    aws: AwsEmulator, price_list: AwsPriceList, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    report = catalog.refresh(sources=("aws",))
    assert report.ok.get("aws") and not report.failed, report.text()
    assert report.notes["aws"].startswith("spot prices not fetched (") and "ProfileNotFound" in report.notes["aws"]
    assert "\n" not in report.notes["aws"]
    assert catalog.price_of("aws", "g5.xlarge", "us-east-1") == pytest.approx(1.234)
