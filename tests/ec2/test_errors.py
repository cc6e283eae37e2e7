"""Every error the gateway promises, produced on purpose and parsed by
botocore into a ClientError with EC2's code; plus tenant isolation and the
transport-level guarantees (XML, never HTML, never a 500 for bad input)."""

import concurrent.futures
import datetime
import http.client
import os
import ssl
import time
import urllib.error
import urllib.request
from unittest import mock

import botocore.auth
import pytest
from botocore.exceptions import ClientError

from conftest import NO_RETRY, make_client

MISSING_INSTANCE = "i-0123456789abcdef0"
MISSING_AMI = "ami-0123456789abcdef0"


def code_of(call, **kwargs):
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    err = e.value.response["Error"]
    assert err["Message"], e.value.response
    assert e.value.response["ResponseMetadata"]["RequestId"]
    return err["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_instance_id_errors(ec2_once):
    assert code_of(ec2_once.describe_instances, InstanceIds=[MISSING_INSTANCE]) == (
        "InvalidInstanceID.NotFound", 400)
    assert code_of(ec2_once.terminate_instances, InstanceIds=["i-nope"]) == (
        "InvalidInstanceID.Malformed", 400)
    assert code_of(ec2_once.get_console_output, InstanceId="instance-1")[0] == (
        "InvalidInstanceID.Malformed")


def test_image_and_parameter_errors(ec2_once, hello_ami):
    assert code_of(ec2_once.run_instances, ImageId=MISSING_AMI, InstanceType="t3.nano",
                   MinCount=1, MaxCount=1) == ("InvalidAMIID.NotFound", 400)
    assert code_of(ec2_once.run_instances, ImageId=hello_ami, InstanceType="z9.enormous",
                   MinCount=1, MaxCount=1) == ("InvalidParameterValue", 400)
    assert code_of(ec2_once.run_instances, ImageId=hello_ami, InstanceType="t3.nano",
                   MinCount=3, MaxCount=2)[0] == "InvalidParameterValue"
    assert code_of(ec2_once.describe_instances,
                   Filters=[{"Name": "no-such-filter", "Values": ["x"]}])[0] == "InvalidParameterValue"
    # Parameters botocore does not require but EC2 does.
    assert code_of(ec2_once.delete_key_pair) == ("MissingParameter", 400)
    assert code_of(ec2_once.create_tags, Resources=[MISSING_INSTANCE], Tags=[]) == (
        "MissingParameter", 400)


def test_capacity(ec2_once, hello_ami):
    # m5.xlarge needs 4096 MiB: more than any host offers.
    assert code_of(ec2_once.run_instances, ImageId=hello_ami, InstanceType="m5.xlarge",
                   MinCount=1, MaxCount=1) == ("InsufficientInstanceCapacity", 500)


def test_dry_run(ec2_once, hello_ami):
    assert code_of(ec2_once.run_instances, ImageId=hello_ami, InstanceType="t3.nano",
                   MinCount=1, MaxCount=1, DryRun=True) == ("DryRunOperation", 412)
    assert code_of(ec2_once.create_key_pair, KeyName="never-created", DryRun=True) == (
        "DryRunOperation", 412)
    assert code_of(ec2_once.describe_instances, DryRun=True)[0] == "DryRunOperation"
    # A dry run still checks what it can.
    assert code_of(ec2_once.run_instances, ImageId=MISSING_AMI, InstanceType="t3.nano",
                   MinCount=1, MaxCount=1, DryRun=True)[0] == "InvalidAMIID.NotFound"
    names = {k["KeyName"] for k in ec2_once.describe_key_pairs()["KeyPairs"]}
    assert "never-created" not in names


def test_unauthorized(ec2_once, hello_ami):
    # The hello image is the operator's (public): a tenant may launch it, not remove it.
    assert code_of(ec2_once.deregister_image, ImageId=hello_ami) == ("UnauthorizedOperation", 403)


def test_authentication_errors(endpoint, region):
    wrong = make_client(endpoint, region, "AKIDNOSUCHKEY0000", "x" * 40, config=NO_RETRY)
    assert code_of(wrong.describe_regions) == ("AuthFailure", 401)
    bad_secret = make_client(endpoint, region, os.environ["AWS_ACCESS_KEY_ID"], "wrong-secret",
                             config=NO_RETRY)
    assert code_of(bad_secret.describe_regions) == ("SignatureDoesNotMatch", 403)
    other_region = make_client(endpoint, "us-east-1", config=NO_RETRY)
    assert code_of(other_region.describe_regions) == ("AuthFailure", 401)


def test_request_expired(ec2_once):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=past):
        assert code_of(ec2_once.describe_regions) == ("RequestExpired", 400)


def test_rate_limit(endpoint, region):
    # Account B's bucket: 100 requests, refilled at 20/s.
    other = (os.environ["NUBIS_EC2_OTHER_KEY"], os.environ["NUBIS_EC2_OTHER_SECRET"])
    client = make_client(endpoint, region, *other, config=NO_RETRY)
    client.describe_regions()  # connection warm

    def one(_):
        try:
            client.describe_regions()
            return "ok"
        except ClientError as e:
            return e.response["Error"]["Code"]

    # Batches until the limit shows (bounded: a client slower than the refill
    # rate could never see it, and that would be a failure worth seeing).
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        while "RequestLimitExceeded" not in results and len(results) < 3000:
            results += pool.map(one, range(300))
    assert "RequestLimitExceeded" in results, f"{len(results)} requests, none throttled"
    assert set(results) <= {"ok", "RequestLimitExceeded"}
    assert results.count("ok") >= 100
    # botocore's default retry policy treats it as throttling and gets through.
    patient = make_client(endpoint, region, *other)
    assert patient.describe_regions()["Regions"]
    time.sleep(6)  # let the bucket refill for the tests that follow


def test_other_accounts_instances_are_not_found(ec2, ec2_other, hello_ami, cleanup):
    out = ec2.run_instances(ImageId=hello_ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)
    iid = out["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    assert code_of(ec2_other.describe_instances, InstanceIds=[iid])[0] == "InvalidInstanceID.NotFound"
    assert code_of(ec2_other.terminate_instances, InstanceIds=[iid])[0] == "InvalidInstanceID.NotFound"
    assert code_of(ec2_other.get_console_output, InstanceId=iid)[0] == "InvalidInstanceID.NotFound"
    assert code_of(ec2_other.create_tags, Resources=[iid], Tags=[{"Key": "a", "Value": "b"}])[0] == (
        "InvalidInstanceID.NotFound")
    seen = [i["InstanceId"] for r in ec2_other.describe_instances()["Reservations"]
            for i in r["Instances"]]
    assert iid not in seen
    # Still there for its owner.
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"]


def tls_context():
    """The quickstart's local CA when the gateway speaks HTTPS (run.sh)."""
    bundle = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else None


def test_gateway_speaks_https_with_the_quickstart_ca(endpoint):
    """run.sh brings the local cloud up with `quickstart.sh --tls`: the
    endpoint is HTTPS, trusted through AWS_CA_BUNDLE, and refused by a client
    that trusts only the system's CAs."""
    if os.environ.get("NUBIS_QS_TLS", "1") != "1":
        pytest.skip("NUBIS_EC2_TLS=0: plain HTTP requested")
    assert endpoint.startswith("https://"), endpoint
    req = urllib.request.Request(endpoint + "/", method="GET")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30, context=tls_context())
    assert e.value.read().decode().startswith("<?xml")
    with pytest.raises(urllib.error.URLError) as untrusted:
        urllib.request.urlopen(req, timeout=30, context=ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value), untrusted.value
    # Plain HTTP to the TLS port: no HTTP answer (a TLS alert, then close).
    plain = "http://" + endpoint[len("https://"):]
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
        urllib.request.urlopen(urllib.request.Request(plain + "/", method="GET"), timeout=5)


def test_raw_http_answers_are_xml(endpoint):
    for req in (
        urllib.request.Request(endpoint + "/", method="GET"),
        urllib.request.Request(endpoint + "/", data=b"Action=DescribeRegions&Version=2016-11-15",
                               method="POST",
                               headers={"Content-Type": "application/x-www-form-urlencoded"}),
        urllib.request.Request(endpoint + "/", data=b"x" * (1024 * 1024), method="POST",
                               headers={"Content-Type": "application/x-www-form-urlencoded"}),
    ):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30, context=tls_context())
        body = e.value.read().decode()
        assert 400 <= e.value.code < 500, (e.value.code, body)
        assert body.startswith("<?xml") and "<Response><Errors><Error><Code>" in body, body
        assert "<html" not in body.lower()
