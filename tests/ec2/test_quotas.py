"""Per-account quotas seen through botocore: an account whose key-pair
quota the operator set to 1 (with `nubis admin quotas set`) gets EC2's
`ResourceLimitExceeded` for its second key pair, nothing is created, and
deleting the first frees the quota again."""

import json
import os
import shlex
import subprocess
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import NO_RETRY, make_client


def admin(*args):
    cli = os.environ.get("NUBIS_EC2_ADMIN_CLI")
    if not cli:
        if os.environ.get("NUBIS_REQUIRE_KVM") == "1":
            pytest.fail("NUBIS_EC2_ADMIN_CLI is not set (run tests/ec2/run.sh)")
        pytest.skip("SKIPPED: NUBIS_EC2_ADMIN_CLI is not set (run tests/ec2/run.sh)")
    cmd = [*shlex.split(cli), "-o", "json", "admin", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{cmd}: {p.stderr}"
    return json.loads(p.stdout)


def test_key_pair_quota(endpoint, region):
    account = admin("accounts", "create", f"quota-{uuid.uuid4().hex[:8]}")
    quotas = admin("quotas", "set", account["account_id"], "key-pairs", "1")
    kp = [q for q in quotas["quotas"] if q["name"] == "key-pairs"]
    assert kp and kp[0]["limit"] == 1 and kp[0]["overridden"], quotas
    ec2 = make_client(
        endpoint, region, account["access_key_id"], account["secret_access_key"], NO_RETRY
    )
    ec2.create_key_pair(KeyName="first")
    with pytest.raises(ClientError) as e:
        ec2.create_key_pair(KeyName="second")
    assert e.value.response["Error"]["Code"] == "ResourceLimitExceeded", e.value.response
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    names = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    assert names == ["first"], names
    ec2.delete_key_pair(KeyName="first")
    ec2.create_key_pair(KeyName="second")
