"""AWS's faults on the EC2 emulator: spot and on-demand refusals, a RunInstances that times out after launching,
throttling, terminate failing, bad credentials, a missing image parameter, a quota too low.

Each test checks what the user sees (the error, the progress lines), what is billed, and that nothing is
left running (the autouse ``no_aws_leftovers``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dask
import moto.settings
import pytest
from cumulo.exceptions import (
    CapacityError,
    CredentialsError,
    ProviderError,
    QuotaError,
    SpecError,
)
from cumulo.life.registry import Registry
from cumulo.providers.aws import AWSProvider
from cumulo.spec import ClusterSpec

from .aws_emulator import AwsEmulator
from .aws_support import aws, no_aws_leftovers  # noqa: F401,F811  (fixtures)
from .cloud_support import Started, close, start, stop_from_row

pytestmark = pytest.mark.timeout(180)


def _spec(**kw: Any) -> ClusterSpec:
    values: dict[str, Any] = {"provider": "aws", "gpu": "A10G", "workers": 2, "spot": True, **kw}
    return ClusterSpec(**values)


def _launch(spec: ClusterSpec) -> Started:
    return asyncio.run(start(spec, provider=AWSProvider()))


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cumulo.aws"]


def _markets(started: Started) -> dict[str, list[dict[str, Any]]]:
    """Each instance's recorded launch, by role ("cumulo-<installation>-<cluster>-<role>")."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in Registry().resources(cluster_id=started.id):
        if r.kind == "instance":
            out.setdefault(r.meta["name"].split("-", 3)[3], []).append(r.meta)
    return out


@pytest.fixture(autouse=True)
def progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cumulo.aws")


def test_spot_refused_in_one_zone_moves_to_the_next_cheapest(aws: AwsEmulator,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    aws.faults.spot_refused = {"us-east-1b"}
    s = _launch(_spec())
    try:
        (worker,) = _markets(s)["workers"]
        assert (worker["zone"], worker["market"], worker["price_per_hour"]) == ("us-east-1c", "spot", 0.41)
        assert any("us-east-1b spot: InsufficientInstanceCapacity" in line for line in _lines(caplog))
        assert Registry().get(s.id).rate_per_hour == pytest.approx(1.006 + 0.41)
    finally:
        asyncio.run(close(s))


def test_spot_refused_everywhere_falls_back_to_on_demand_and_bills_it(
        aws: AwsEmulator, caplog: pytest.LogCaptureFixture) -> None:
    aws.faults.spot_refused = {"*"}
    s = _launch(_spec(workers=3))
    try:
        markets = _markets(s)
        assert {m["market"] for metas in markets.values() for m in metas} == {"on-demand"}
        assert len(markets["workers"]) == 2  # both workers in one request
        assert Registry().get(s.id).rate_per_hour == pytest.approx(3 * 1.006)
        fallback = [line for line in _lines(caplog) if "falling back" in line]
        assert len(fallback) == 1 and all("on-demand" in line and "$1.006/h" in line for line in fallback)
        assert any("billing $3.018/h for what was launched" in line for line in _lines(caplog))
        assert all(i.lifecycle is None for i in aws.live())
    finally:
        asyncio.run(close(s))


def test_every_spot_refusal_code_moves_on_and_a_vcpu_limit_stops(aws: AwsEmulator) -> None:
    import botocore.exceptions

    from cumulo.providers.aws.api import CAPACITY_CODES, translate

    def refusal(code: str) -> BaseException:
        error = botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "no"}}, "RunInstances")
        return translate(error, "RunInstances in us-east-1")

    for code in ("InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded"):
        assert code in CAPACITY_CODES and isinstance(refusal(code), CapacityError), code  # the fallback goes on
    assert isinstance(refusal("VcpuLimitExceeded"), QuotaError)  # no other zone or market would grant it


def test_spot_only_never_falls_back(aws: AwsEmulator) -> None:
    aws.faults.spot_refused = {"*"}
    with dask.config.set({"cumulo.aws.head-spot": True}), pytest.raises(CapacityError) as err:
        _launch(_spec(spot="only"))
    assert "no capacity for g5.xlarge" in str(err.value) and "spot=True, which falls back" in str(err.value)
    assert not aws.instances()
    (row,) = Registry().list(include_closed=True)
    assert row.state == "failed"


def test_on_demand_refused_everywhere_fails_cleanly(aws: AwsEmulator) -> None:
    aws.faults.on_demand_refused = {"*"}
    with pytest.raises(CapacityError, match="us-east-1a .on-demand: InsufficientInstanceCapacity"):
        _launch(_spec(spot=False))
    assert not aws.instances()


def test_run_instances_timing_out_after_launching_launches_once(aws: AwsEmulator) -> None:
    aws.faults.run_delay = 5.0  # past cumulo.aws.read-timeout (3 s): botocore retries with the same ClientToken
    s = _launch(_spec(spot=False))
    try:
        assert len(aws.instances()) == 2  # the head and one worker: the retried request launched nothing more
        assert aws.run_requests == 3
    finally:
        asyncio.run(close(s))


def test_throttling_is_retried_with_backoff(aws: AwsEmulator) -> None:
    aws.faults.throttle = 3
    s = _launch(_spec(workers=1))
    try:
        assert aws.faults.throttle == 0 and len(aws.live()) == 1
    finally:
        asyncio.run(close(s))


def test_terminate_failing_keeps_the_row_until_a_retry_confirms(aws: AwsEmulator) -> None:
    s = _launch(_spec(workers=2))
    aws.faults.terminate_failures = 1000
    with pytest.raises(ProviderError, match="TerminateInstances"):
        asyncio.run(close(s))
    registry = Registry()
    assert registry.get(s.id).state == "stop-failed" and len(aws.live()) == 2
    aws.faults.terminate_failures = 0
    asyncio.run(stop_from_row(registry, s.id, AWSProvider()))
    assert registry.get(s.id).state == "closed" and not aws.live()


def test_bad_credentials_fail_fast_without_the_secret(aws: AwsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "Wr0ngSecretKeyThatMustNeverBePrinted0123"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys, as AWS does
    with pytest.raises(CredentialsError) as err:
        _launch(_spec())
    assert secret not in str(err.value) and "aws sts get-caller-identity" in str(err.value)
    assert not Registry().list(include_closed=True)  # refused before any row


def test_no_credentials_at_all(aws: AwsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError, match="no AWS credentials found"):
        _launch(_spec())


def test_missing_ami_parameter_says_to_pass_ami(aws: AwsEmulator) -> None:
    aws.ami_parameters.clear()
    with pytest.raises(SpecError, match=r"pass ami='ami-\.\.\.'"):
        _launch(_spec())
    assert not aws.instances() and not Registry().list(include_closed=True)


def test_quota_too_low_is_refused_before_anything_launches(aws: AwsEmulator) -> None:
    aws.quotas = {"L-DB2E81BA": 4.0, "L-3819A6DF": 64.0}  # on-demand G: one g5.xlarge (4 vCPU) only
    with pytest.raises(QuotaError) as err:
        _launch(_spec(spot=False, workers=3))
    assert "needs 12 vCPUs" in str(err.value) and "granted 4" in str(err.value)
    assert "request-service-quota-increase" in str(err.value)
    assert not aws.instances() and not Registry().list(include_closed=True)


def test_unreadable_quota_says_so_and_goes_on(aws: AwsEmulator, caplog: pytest.LogCaptureFixture) -> None:
    s = _launch(_spec(spot=False, workers=1))
    try:
        assert any(line.startswith("could not read the vCPU quota 'Running On-Demand G and VT instances'")
                   for line in _lines(caplog))
    finally:
        asyncio.run(close(s))


def test_unknown_option_gpu_and_region_are_refused_without_a_request(aws: AwsEmulator) -> None:
    with pytest.raises(SpecError, match="no option 'amii'.*did you mean 'ami'"):
        _launch(_spec(options={"amii": "ami-1"}))
    with pytest.raises(SpecError, match="no GPU called 'B300'"):
        _launch(_spec(gpu="B300"))
    with pytest.raises(SpecError, match="come with 1, 4, 8 GPUs, not 2"):
        _launch(_spec(gpus_per_worker=2))
    with pytest.raises(SpecError, match="no region 'us-east1'.*did you mean 'us-east-1'"):
        _launch(_spec(region="us-east1"))
    assert aws.run_requests == 0
