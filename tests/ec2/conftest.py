"""Fixtures for the EC2 gateway tests: real, unmodified aws-cli and boto3
clients pointed at a running Nubis cluster (brought up by tests/ec2/run.sh).

Environment (written by run.sh from deploy/quickstart.sh's quickstart.env):
  NUBIS_EC2_ENDPOINT                       the gateway, e.g. http://127.0.0.1:50152
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY tenant account A
  AWS_DEFAULT_REGION                       the region (NUBIS_QS_REGION, default nubis-local-1)
  NUBIS_EC2_OTHER_KEY / NUBIS_EC2_OTHER_SECRET  tenant account B (isolation tests)
"""

import json
import os
import subprocess
import time
import uuid

import boto3
import pytest
from botocore.config import Config


def _require(name):
    value = os.environ.get(name)
    if not value:
        if os.environ.get("NUBIS_REQUIRE_KVM") == "1":
            pytest.fail(f"{name} is not set (run tests/ec2/run.sh)")
        pytest.skip(f"SKIPPED: {name} is not set (run tests/ec2/run.sh)")
    return value


@pytest.fixture(scope="session")
def endpoint():
    return _require("NUBIS_EC2_ENDPOINT")


@pytest.fixture(scope="session")
def region():
    return _require("AWS_DEFAULT_REGION")


# Real EC2 waits are slow; the cluster is local. Retries off where a test
# wants to see the first answer.
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def make_client(endpoint, region, key=None, secret=None, config=None):
    kwargs = {"endpoint_url": endpoint, "region_name": region}
    if key:
        kwargs.update(aws_access_key_id=key, aws_secret_access_key=secret)
    if config:
        kwargs["config"] = config
    return boto3.client("ec2", **kwargs)


@pytest.fixture(scope="session")
def ec2(endpoint, region):
    return make_client(endpoint, region)


@pytest.fixture(scope="session")
def ec2_once(endpoint, region):
    """Tenant A, no retries."""
    return make_client(endpoint, region, config=NO_RETRY)


@pytest.fixture(scope="session")
def ec2_other(endpoint, region):
    return make_client(
        endpoint,
        region,
        _require("NUBIS_EC2_OTHER_KEY"),
        _require("NUBIS_EC2_OTHER_SECRET"),
        config=NO_RETRY,
    )


@pytest.fixture(scope="session")
def ec2_resource(endpoint, region):
    return boto3.resource("ec2", endpoint_url=endpoint, region_name=region)


@pytest.fixture(scope="session")
def hello_ami(ec2):
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["hello"]}])["Images"]
    assert len(images) == 1, images
    return images[0]["ImageId"]


@pytest.fixture(scope="session")
def zones(ec2):
    return [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]


class Aws:
    """Runs the real aws-cli (v1, from PyPI) against the gateway."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def run(self, *args, check=True):
        cmd = ["aws", "--endpoint-url", self.endpoint, "--output", "json", "ec2", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
        return p

    def json(self, *args):
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else {}


@pytest.fixture(scope="session")
def aws(endpoint):
    return Aws(endpoint)


@pytest.fixture
def tag():
    """A tag value unique to this test, to find its instances."""
    return f"nbt-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cleanup(ec2):
    """Instance ids to terminate at the end of the test, also on failure."""
    ids = []
    yield ids
    if ids:
        try:
            ec2.terminate_instances(InstanceIds=ids)
        except Exception as e:  # noqa: BLE001 - best effort clean-up
            print(f"cleanup: terminate {ids}: {e}")


def wait_until(what, fn, timeout=600, delay=1.0):
    """Polls fn() until it returns a truthy value; fails after timeout."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(delay)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
