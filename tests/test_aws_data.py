"""Workers read the user's S3 data: with forward_credentials=True, the notebook's short-lived STS session.

moto's S3 on loopback holds a Parquet file; the emulated instances reach it the
way an instance reaches S3 (its endpoint, no credentials of their own), and get
credentials only from the notebook, over the cluster's TLS link.
"""

from __future__ import annotations

import base64
import io
import logging
import os

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


def test_forwarded_credentials_are_a_short_lived_session_that_reads_s3_on_the_workers(
        aws: AwsEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    frame = pd.DataFrame({"x": range(1000), "k": [i % 5 for i in range(1000)]})
    _put_parquet("team-data", "trips/part-0.parquet", frame)
    cluster = cumulo.connect("aws", gpu="A10G", workers=2, forward_credentials=True, name="reads-s3")
    try:
        client = cluster.client
        seen = client.run(lambda: {k: os.environ.get(k) for k in NAMES})
        assert len(seen) == 2
        (session,) = {tuple(v.values()) for v in seen.values()}  # the same session on every worker
        key, secret, token = session
        # a session of its own (GetSessionToken), not the notebook's long-lived key
        assert token and key and key != os.environ["AWS_ACCESS_KEY_ID"] and secret != os.environ["AWS_SECRET_ACCESS_KEY"]
        # the workers read S3 themselves, with it: a dask dataframe whose partitions each worker reads
        # (pyarrow takes no endpoint from the environment: the function names it)
        def read_part(path: str, endpoint: str) -> pd.DataFrame:
            import pyarrow.fs
            import pyarrow.parquet

            fs = pyarrow.fs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1")
            return pyarrow.parquet.read_table(path, filesystem=fs).to_pandas()

        for n in (1, 2):
            _put_parquet("team-data", f"trips/part-{n}.parquet", frame)
        paths = [f"team-data/trips/part-{n}.parquet" for n in (0, 1, 2)]
        got = dd.from_map(read_part, paths, endpoint=aws.endpoint).compute()
        pd.testing.assert_frame_equal(got.reset_index(drop=True), pd.concat([frame] * 3, ignore_index=True))
        assert set(client.run(lambda e: len(read_part(paths[0], e)), aws.endpoint).values()) == {len(frame)}
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
    _put_parquet("team-data", "roles/part-0.parquet", frame)
    cluster = cumulo.connect("aws", gpu="A10G", workers=2, iam_instance_profile="team-reader", name="role-reads")
    try:
        client = cluster.client

        def read_as_the_instance() -> tuple[str | None, str, str, int]:  # local: sent by value
            import io
            import os

            import boto3
            import pandas

            creds = boto3.Session().get_credentials()
            body = boto3.client("s3").get_object(Bucket="team-data", Key="roles/part-0.parquet")["Body"].read()
            return (os.environ.get("AWS_ACCESS_KEY_ID"), creds.method, creds.get_frozen_credentials().access_key,
                    len(pandas.read_parquet(io.BytesIO(body))))

        seen = client.run(read_as_the_instance)
        assert len(seen) == 2
        issued = {c["AccessKeyId"] for c in aws.imds.issued.values()}
        for env_key, method, key, rows in seen.values():
            # no key in the environment: boto3 found the role's credentials in the instance's metadata service
            assert env_key is None and method == "iam-role" and key in issued and rows == len(frame)
        roles = {aws._role_of(i.id) for i in aws.live()}
        assert roles == {"team-reader"}
    finally:
        cluster.close()
    assert aws.wait_idle()


def test_an_unknown_option_next_to_it_is_refused_before_anything_launches(aws: AwsEmulator) -> None:
    with pytest.raises(SpecError, match="forward_credentials"):
        cumulo.connect("aws", gpu="A10G", workers=2, forward_credential=True, name="typo")
    assert not aws.instances()
