"""aws-cli and the instance metadata service: run-instances with user data
and --metadata-options HttpTokens=required, the hello guest's NUBIS-IMDS
console lines (it reads its metadata over IMDSv2), describe shows the
options, modify-instance-metadata-options changes them, bad values fail."""

from conftest import wait_until


def test_imds_with_aws_cli(aws, ec2, hello_ami, tag, cleanup, tmp_path):
    key = aws.json("create-key-pair", "--key-name", tag)
    user_data = tmp_path / "user-data.sh"
    user_data.write_text("#!/bin/sh\necho imds user data\n")
    out = aws.json(
        "run-instances",
        "--image-id", hello_ami,
        "--instance-type", "t3.nano",
        "--count", "1",
        "--key-name", tag,
        "--user-data", f"file://{user_data}",
        "--metadata-options", "HttpTokens=required,HttpPutResponseHopLimit=2",
    )
    iid = out["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    opts = out["Instances"][0]["MetadataOptions"]
    assert opts["HttpTokens"] == "required"
    assert opts["HttpPutResponseHopLimit"] == 2
    assert opts["HttpEndpoint"] == "enabled"
    aws.run("wait", "instance-running", "--instance-ids", iid)

    lines = {}

    def imds_lines():
        c = aws.json("get-console-output", "--instance-id", iid).get("Output", "")
        lines.update(
            (l.split("=", 1)[0], l) for l in c.splitlines() if l.startswith("NUBIS-IMDS ")
        )
        return "NUBIS-IMDS public-key" in lines

    wait_until("the guest's NUBIS-IMDS lines", imds_lines, timeout=300, delay=2)
    assert lines["NUBIS-IMDS instance-id"] == f"NUBIS-IMDS instance-id={iid}"
    assert lines["NUBIS-IMDS user-data"] == "NUBIS-IMDS user-data=#!/bin/sh?echo imds user data"
    assert lines["NUBIS-IMDS public-key"].startswith("NUBIS-IMDS public-key=ssh-")
    assert key["KeyName"] == tag

    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["MetadataOptions"]["HttpTokens"] == "required"
    assert desc["MetadataOptions"]["State"] == "applied"

    out = aws.json(
        "modify-instance-metadata-options",
        "--instance-id", iid,
        "--http-endpoint", "disabled",
    )
    assert out["InstanceId"] == iid
    assert out["InstanceMetadataOptions"]["HttpEndpoint"] == "disabled"
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["MetadataOptions"]["HttpEndpoint"] == "disabled"

    bad = aws.run(
        "modify-instance-metadata-options", "--instance-id", iid,
        "--http-put-response-hop-limit", "65", check=False,
    )
    assert bad.returncode != 0 and "InvalidParameterValue" in bad.stderr, bad.stderr
    bad = aws.run(
        "modify-instance-metadata-options", "--instance-id", "i-0123456789abcdef0",
        "--http-tokens", "optional", check=False,
    )
    assert "InvalidInstanceID.NotFound" in bad.stderr, bad.stderr
    aws.run("delete-key-pair", "--key-name", tag)
