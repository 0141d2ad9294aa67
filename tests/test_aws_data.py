"""Workers read the user's S3 data with ``dd.read_parquet("s3://...")``: as the notebook's forwarded
short-lived STS session (forward_credentials=True), or as their own role (iam_instance_profile=).

moto's S3 on loopback holds Parquet files; the emulated instances reach it the
way an instance reaches S3 (its endpoint, no credentials of their own), and get
credentials only from the notebook, over the cluster's TLS link, or from their
metadata service. dask's s3:// goes through s3fs (aiobotocore), which takes the
endpoint from ``AWS_ENDPOINT_URL`` and the metadata service's address from
``AWS_EC2_METADATA_SERVICE_ENDPOINT``, as botocore does. Which credentials read
each object is seen on the server's side (the emulator's ``s3_requests``, as
CloudTrail's S3 data events record it): only the workers hold them, so a read
signed with them happened on a worker.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Callable

import boto3
import cumulo
import dask.dataframe as dd
import pandas as pd
import pytest
from cumulo.exceptions import SpecError
from cumulo.life.registry import Registry

from .aws_emulator import AwsEmulator
from .aws_support import aws, no_aws_leftovers  # noqa: F401,F811  (fixtures)

pytestmark = pytest.mark.timeout(180)

NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _put_parquet(bucket: str, key: str, frame: pd.DataFrame) -> None:
    s3 = boto3.client("s3")
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    buf = io.BytesIO()
    frame.to_parquet(buf)
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def _s3fs_identity() -> Callable[[], tuple[str | None, str, str]]:
    """A function for client.run: on a worker it answers (AWS_ACCESS_KEY_ID of its environment, the credential
    provider that s3fs's session found, the access key it signs with). Nested, so that cloudpickle sends it
    by value: the workers cannot import this test module."""

    def identity() -> tuple[str | None, str, str]:
        import os

        import s3fs
        from fsspec.asyn import sync

        fs = s3fs.S3FileSystem(skip_instance_cache=True)

        async def ask() -> tuple[str, str]:
            await fs.set_session()
            creds = await fs.session.get_credentials()
            frozen = await creds.get_frozen_credentials()
            return creds.method, frozen.access_key

        method, key = sync(fs.loop, ask)
        return os.environ.get("AWS_ACCESS_KEY_ID"), method, key

    return identity


def _read_with(aws: AwsEmulator, keys: set[str], since: int) -> set[str]:
    """Paths of the objects that S3 served to a GET signed with one of ``keys`` after request ``since``."""
    return {r.path for r in aws.s3_requests[since:] if r.method == "GET" and r.access_key in keys}


def test_forwarded_credentials_are_a_short_lived_session_that_reads_s3_on_the_workers(
        aws: AwsEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    frame = pd.DataFrame({"x": range(1000), "k": [i % 5 for i in range(1000)]})
    parts = [f"/team-data/trips/part-{n}.parquet" for n in (0, 1, 2)]
    for path in parts:
        _put_parquet("team-data", path.split("/", 2)[2], frame)
    cluster = cumulo.connect("aws", gpu="A10G", workers=2, forward_credentials=True, name="reads-s3")
    try:
        client = cluster.client
        seen = client.run(lambda: {k: os.environ.get(k) for k in NAMES})
        assert len(seen) == 2
        (session,) = {tuple(v.values()) for v in seen.values()}  # the same session on every worker
        key, secret, token = session
        # a session of its own (GetSessionToken), not the notebook's long-lived key
        assert token and key and key != os.environ["AWS_ACCESS_KEY_ID"] and secret != os.environ["AWS_SECRET_ACCESS_KEY"]
        # s3fs on every worker signs with it (botocore's environment provider), from no setting of cumulo's
        assert set(client.run(_s3fs_identity()).values()) == {(key, "env", key)}
        # the workers read S3 themselves, with it: dask's own s3:// (s3fs), each partition read on a worker
        since = len(aws.s3_requests)
        got = dd.read_parquet("s3://team-data/trips/").compute()
        pd.testing.assert_frame_equal(got.reset_index(drop=True), pd.concat([frame] * 3, ignore_index=True))
        assert _read_with(aws, {key}, since) == set(parts)
        # never in the first-boot script, the registry, or a log line
        for inst in aws.live():
            raw = inst.user_data[0] if isinstance(inst.user_data, list) else inst.user_data
            script = base64.b64decode(raw.as_bytes()).decode()
            assert secret not in script and token not in script and key not in script
        assert secret.encode() not in Registry().path.read_bytes() and token.encode() not in Registry().path.read_bytes()
        assert secret not in caplog.text and token not in caplog.text
        assert "forwarded short-lived AWS credentials" in caplog.text
    finally:
        cluster.close()
    assert aws.wait_idle()


def test_with_an_instance_profile_the_workers_read_s3_as_their_own_role(aws: AwsEmulator) -> None:
    iam = boto3.client("iam")
    trust = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},' \
            '"Action":"sts:AssumeRole"}]}'
    iam.create_role(RoleName="team-reader", AssumeRolePolicyDocument=trust)
    iam.create_instance_profile(InstanceProfileName="team-reader")
    iam.add_role_to_instance_profile(InstanceProfileName="team-reader", RoleName="team-reader")
    frame = pd.DataFrame({"x": range(500)})
    parts = [f"/team-data/roles/part-{n}.parquet" for n in (0, 1)]
    for path in parts:
        _put_parquet("team-data", path.split("/", 2)[2], frame)
    cluster = cumulo.connect("aws", gpu="A10G", workers=2, iam_instance_profile="team-reader", name="role-reads")
    try:
        client = cluster.client
        since = len(aws.s3_requests)
        got = dd.read_parquet("s3://team-data/roles/").compute()
        pd.testing.assert_frame_equal(got.reset_index(drop=True), pd.concat([frame] * 2, ignore_index=True))
        seen = client.run(_s3fs_identity())
        assert len(seen) == 2
        issued = {c["AccessKeyId"] for c in aws.imds.issued.values()}
        for env_key, method, key in seen.values():
            # no key in the environment: s3fs found the role's credentials in the instance's metadata service
            assert env_key is None and method == "iam-role" and key in issued
        # each partition was read on a worker, signed with its instance's role credentials; the notebook listed
        # the files with its own (docs/aws.md: the user needs to read the data too)
        assert _read_with(aws, issued, since) == set(parts)
        assert "/team-data" in _read_with(aws, {os.environ["AWS_ACCESS_KEY_ID"]}, since)
        roles = {aws._role_of(i.id) for i in aws.live()}
        assert roles == {"team-reader"}
    finally:
        cluster.close()
    assert aws.wait_idle()


def test_an_unknown_option_next_to_it_is_refused_before_anything_launches(aws: AwsEmulator) -> None:
    with pytest.raises(SpecError, match="forward_credentials"):
        cumulo.connect("aws", gpu="A10G", workers=2, forward_credential=True, name="typo")
    assert not aws.instances()
