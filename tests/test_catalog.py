"""The price catalog: snapshot schema and sanity, filters, refresh from loopback emulators, the CLI table."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import dask
import pytest

from cumulo.cost import catalog
from cumulo.cli import main

from .price_emulator import KEY, PriceEmulator

# $/GPU-hour bands wide enough for every public cloud list price we know of, narrow enough to catch a
# price per instance filed as per GPU (or a typo by a factor of ten).
BANDS = {"T4": (0.2, 1.5), "T4G": (0.2, 1.5), "L4": (0.4, 1.6), "L40S": (1.0, 4.0), "A10": (0.5, 3.5), "A10G": (0.5, 2.5),
         "A100-40GB": (0.8, 5.0), "A100-80GB": (1.0, 6.5), "H100": (1.5, 13.0), "H200": (2.0, 15.0)}
MEMORY = {"T4": {16}, "T4G": {16}, "L4": {24}, "L40S": {48}, "A10": {24}, "A10G": {24}, "A100-40GB": {40}, "A100-80GB": {80},
          "H100": {80, 94}, "H200": {141}}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path):
    with dask.config.set({"cumulo.catalog.cache-path": str(tmp_path / "prices-cache.json")}):
        yield


def expected_gpus(provider: str, shape: str) -> int:
    """What the shape's name says about its GPU count, by each provider's naming scheme."""
    if provider == "lambda":
        return int(re.match(r"gpu_(\d+)x_", shape).group(1))
    if provider == "gcp":
        m = re.search(r"-(\d+)g$", shape) or re.search(r"\+(\d+)x", shape)
        if m:
            return int(m.group(1))
        return {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-24": 2, "g2-standard-48": 4,
                "g2-standard-96": 8}[shape]
    if provider == "aws":
        family, size = shape.split(".")
        if family in ("p4d", "p4de", "p5", "p5e", "p5en"):
            return 8
        return {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8, "metal": 8}.get(size, 1)
    if provider == "azure":
        if shape.startswith("Standard_ND96"):
            return 8
        m = re.match(r"Standard_NC(\d+)ads_A100_v4", shape)
        if m:
            return int(m.group(1)) // 24
        m = re.match(r"Standard_NC(\d+)as_T4_v3", shape)
        if m:
            return 4 if int(m.group(1)) == 64 else 1
        return 1
    raise AssertionError(f"unknown provider {provider}")


def test_snapshot_schema_and_provenance() -> None:
    snap = catalog.snapshot()
    assert list(snap.columns) == catalog.COLUMNS
    assert len(snap) >= 30
    assert snap["source"].str.startswith("https://").all(), "every row names its source"
    assert snap["as_of"].str.match(r"^\d{4}(-\d{2}(-\d{2})?)?$").all(), "every row carries an as-of date"
    assert not snap.duplicated(["provider", "instance_type", "region"]).any()


def test_gpu_counts_match_shape_names() -> None:
    snap = catalog.snapshot()
    wrong = [(r.provider, r.instance_type, r.gpu_count) for r in snap.itertuples()
             if expected_gpus(r.provider, r.instance_type) != r.gpu_count]
    assert not wrong, f"GPU count contradicts the shape name: {wrong}"
    # Lambda names say the model too
    for r in snap[snap.provider == "lambda"].itertuples():
        assert r.gpu_model.split("-")[0].lower() in r.instance_type


def test_prices_positive_and_per_gpu_in_band() -> None:
    snap = catalog.snapshot()
    assert (snap["on_demand_per_hour"] > 0).all()
    spot = snap.dropna(subset=["spot_per_hour"])
    assert (spot["spot_per_hour"] < spot["on_demand_per_hour"]).all()
    for r in snap.itertuples():
        lo, hi = BANDS[r.gpu_model]
        per_gpu = r.on_demand_per_hour / r.gpu_count
        assert lo <= per_gpu <= hi, f"{r.provider} {r.instance_type}: ${per_gpu:.2f}/GPU-h outside {lo}-{hi}"
        assert r.gpu_memory_gb in MEMORY[r.gpu_model], (r.instance_type, r.gpu_memory_gb)
        assert r.vcpus > 0 and r.ram_gb > 0


def test_coverage_of_common_shapes() -> None:
    snap = catalog.snapshot()
    have = snap.groupby("provider")["gpu_model"].agg(set).to_dict()
    assert {"A10", "A100-40GB", "A100-80GB", "H100"} <= have["lambda"]
    assert {"T4", "L4", "A10G", "A100-40GB", "H100"} <= have["aws"]
    assert {"T4", "A10", "A100-40GB", "A100-80GB", "H100"} <= have["azure"]
    assert {"T4", "L4", "A100-40GB", "A100-80GB", "H100"} <= have["gcp"]


def test_design_anchors_exact() -> None:
    snap = catalog.snapshot().set_index(["provider", "instance_type"])["on_demand_per_hour"]
    anchors = {("lambda", "gpu_1x_a10"): 0.75, ("lambda", "gpu_1x_h100_pcie"): 2.49,
               ("lambda", "gpu_1x_h100_sxm5"): 3.29, ("lambda", "gpu_8x_h100_sxm5"): 23.92,
               ("aws", "g4dn.xlarge"): 0.526, ("aws", "g6.2xlarge"): 0.9776, ("aws", "p5.48xlarge"): 98.32,
               ("azure", "Standard_NC24ads_A100_v4"): 3.673}
    for key, price in anchors.items():
        assert snap[key] == pytest.approx(price)


def test_prices_filters_and_sort() -> None:
    frame = catalog.prices()
    assert frame["per_gpu_hour"].is_monotonic_increasing
    h100 = catalog.prices(gpu="h100")
    assert set(h100["gpu_model"]) == {"H100"}
    a100 = catalog.prices(gpu="A100")
    assert set(a100["gpu_model"]) == {"A100-40GB", "A100-80GB"}
    aws = catalog.prices(provider="AWS", region="us-east-1")
    assert set(aws["provider"]) == {"aws"}
    east = catalog.prices(region="eastus")
    assert set(east["region"]) == {"eastus", "all"}  # Lambda prices hold in every region
    assert catalog.price_of("aws", "g4dn.xlarge") == pytest.approx(0.526)
    assert catalog.price_of("aws", "no-such-shape") is None


def test_refresh_from_live_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", KEY)
    with PriceEmulator() as emu, dask.config.set({"cumulo.catalog.lambda-url": emu.lambda_url,
                                                  "cumulo.catalog.azure-url": emu.azure_url}):
        report = catalog.refresh(sources=("lambda", "azure"))  # AWS's: tests/test_aws_prices.py
        assert report.ok == {"lambda": 2, "azure": 2}, report.text()
        assert not report.failed
        assert any("page=1" in p for p in emu.requests), "followed Azure's NextPageLink"
    frame = catalog.prices()
    h100 = frame[(frame.provider == "lambda") & (frame.instance_type == "gpu_1x_h100_sxm5")]
    assert len(h100) == 1 and h100["on_demand_per_hour"].iloc[0] == pytest.approx(2.99)
    assert h100["source"].iloc[0] == f"price fetched by `cumulo prices --refresh` from {emu.lambda_url}/instance-types"
    assert re.match(r"^\d{4}-\d{2}-\d{2}$", h100["as_of"].iloc[0])
    a100 = frame[frame.instance_type == "Standard_NC24ads_A100_v4"].iloc[0]
    assert a100["on_demand_per_hour"] == pytest.approx(3.5)  # not the Windows price
    assert a100["spot_per_hour"] == pytest.approx(0.9)
    h200 = catalog.prices(gpu="H200")
    assert list(h200["instance_type"]) == ["Standard_ND96isr_H200_v5"]
    assert h200["gpu_count"].iloc[0] == 8
    assert "cpu_4x_general" not in set(frame["instance_type"])
    # snapshot rows not refreshed are still there
    assert "g4dn.xlarge" in set(frame["instance_type"])


def test_failed_refresh_keeps_last_good_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", KEY)
    with PriceEmulator() as emu, dask.config.set({"cumulo.catalog.lambda-url": emu.lambda_url,
                                                  "cumulo.catalog.azure-url": emu.azure_url}):
        assert not catalog.refresh(sources=("lambda", "azure")).failed  # AWS's: tests/test_aws_prices.py
        emu.fail = True
        report = catalog.refresh(sources=("lambda", "azure"))
    assert set(report.failed) == {"lambda", "azure"}
    assert "keeping the last good data" in report.text()
    fresh = next(line for line in catalog.freshness() if line.startswith("lambda: "))
    assert fresh.startswith("lambda: live prices fetched") and "last refresh failed" in fresh
    frame = catalog.prices()
    assert frame[frame.instance_type == "gpu_1x_h100_sxm5"]["on_demand_per_hour"].iloc[0] == pytest.approx(2.99)


def test_refresh_without_key_or_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home-for-test")
    with PriceEmulator() as emu, dask.config.set({"cumulo.catalog.lambda-url": emu.lambda_url,
                                                  "cumulo.catalog.azure-url": "http://127.0.0.1:9/closed",
                                                  "cumulo.lambda.api-key-file": None,
                                                  "cumulo.catalog.timeout": 2}):
        report = catalog.refresh()
    assert "lambda" in report.failed and "azure" in report.failed
    assert KEY not in report.text()
    assert len(catalog.prices()) == len(catalog.snapshot())


def test_refresh_redacts_an_echoed_key_and_caches_privately(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cumulo prices --refresh` against a server that echoes the refused key: printed and cached redacted, 0600."""
    wrong = "wrong_price_key_0123456789abcd"
    monkeypatch.setenv("LAMBDA_API_KEY", wrong)
    with PriceEmulator() as emu, dask.config.set({"cumulo.catalog.lambda-url": emu.lambda_url,
                                                  "cumulo.catalog.azure-url": emu.azure_url}):
        emu.echo = True
        assert main(["prices", "--refresh"]) == 0
    out = capsys.readouterr()
    assert "lambda: FAILED" in out.out and "received Bearer ****abcd" in out.out, out.out
    cache = tmp_path / "prices-cache.json"
    for text in (out.out, out.err, cache.read_text()):
        assert wrong not in text
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_cli_table_sorted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "--gpu", "A100"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "A100" in ln]
    per_gpu = [float(ln.split()[4]) for ln in lines]
    assert per_gpu == sorted(per_gpu) and len(per_gpu) >= 8
    assert "$/GPU-h" in out


# -- what an estimate cites, and a GPU the catalog does not know (issue 21) -----------------------


def test_every_estimate_says_what_its_price_is_how_old_and_how_to_refresh_it() -> None:
    """The New cluster form shows an offer's `source` then its `as_of`: the pair must read as a citation."""
    assert "anchor" not in Path(catalog._SNAPSHOT).read_text()  # a word from our design notes, not for users
    frame = catalog.prices()
    lambda_row = frame[frame["instance_type"] == "gpu_1x_a10"].iloc[0]
    assert lambda_row["source"] == ("list price bundled with cumulo (`cumulo prices --refresh` fetches current "
                                    "ones) from https://lambda.ai/pricing")
    assert lambda_row["as_of"] == "2025"
    aws_row = frame[frame["instance_type"] == "g4dn.xlarge"].iloc[0]  # AWS's price list is a live source
    assert aws_row["source"].startswith("list price bundled with cumulo (`cumulo prices --refresh` fetches current "
                                        "ones) from https://aws.amazon.com/")
    gcp_row = frame[frame["provider"] == "gcp"].iloc[0]
    assert gcp_row["source"].startswith("list price bundled with cumulo (no live gcp source: check the page) from ")
    assert catalog.snapshot()["source"].str.startswith("https://").all()  # the data keeps the bare page


def test_the_estimate_line_cites_the_labelled_price() -> None:
    from cumulo.share import estimate_line

    line = estimate_line({"clusters": [{"spec": {"provider": "lambda", "gpu": "A10", "workers": 2}}]})
    assert line.startswith("current estimate: $1.50/h (2 x gpu_1x_a10 at $0.75/h, lambda list price (list price "
                           "bundled with cumulo")
    assert line.endswith("from https://lambda.ai/pricing, as of 2025))")


def test_cli_prices_for_an_unknown_gpu_lists_the_known_ones_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "--gpu", "X999"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cumulo prices: no offers match gpu='X999'. GPUs in the catalog: A10, A100-40GB")
    assert "H100" in err and "T4" in err
    assert main(["prices", "--gpu", "H100", "--provider", "aws", "--region", "eu-west-1"]) == 1
    assert "regions of aws: us-east-1" in capsys.readouterr().err
    assert main(["prices", "--gpu", "H10"]) == 0  # a prefix that matches is a match
