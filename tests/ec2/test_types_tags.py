"""DescribeInstanceTypes over the operator's catalogue (EC2's families,
filters, InstanceTypes errors) and tags with EC2's limits and errors
(TagLimitExceeded, key/value lengths, the aws: prefix, MissingParameter),
DescribeTags filters and tenant isolation, through boto3 and aws-cli."""

from test_errors import code_of


def test_describe_instance_types_families_and_filters(ec2, ec2_once, aws):
    names = {t["InstanceType"] for t in ec2.describe_instance_types()["InstanceTypes"]}
    for fam, sizes in [("t2", ["nano", "micro", "2xlarge"]), ("t3a", ["medium"]),
                       ("m5", ["large", "4xlarge"]), ("c5", ["large"]), ("r5", ["4xlarge"])]:
        for s in sizes:
            assert f"{fam}.{s}" in names, names
    got = ec2.describe_instance_types(InstanceTypes=["t2.micro", "r5.large"])["InstanceTypes"]
    by = {t["InstanceType"]: t for t in got}
    assert by["t2.micro"]["VCpuInfo"]["DefaultVCpus"] == 1
    assert by["t2.micro"]["MemoryInfo"]["SizeInMiB"] == 1024
    assert by["t2.micro"]["FreeTierEligible"] is True
    assert by["r5.large"]["MemoryInfo"]["SizeInMiB"] == 16384
    assert by["r5.large"]["VCpuInfo"]["DefaultThreadsPerCore"] == 2
    assert by["r5.large"]["BurstablePerformanceSupported"] is False
    assert by["r5.large"]["ProcessorInfo"]["SupportedArchitectures"] == ["x86_64"]
    assert by["r5.large"]["SupportedUsageClasses"] == ["on-demand"]

    big = ec2.describe_instance_types(Filters=[
        {"Name": "vcpu-info.default-vcpus", "Values": ["16"]},
        {"Name": "memory-info.size-in-mib", "Values": ["65536"]}])["InstanceTypes"]
    assert [t["InstanceType"] for t in big] == ["m5.4xlarge"]
    burst = ec2.describe_instance_types(Filters=[
        {"Name": "instance-type", "Values": ["t3a.*"]},
        {"Name": "burstable-performance-supported", "Values": ["true"]},
        {"Name": "current-generation", "Values": ["true"]}])["InstanceTypes"]
    assert len(burst) == 7
    # The paginator follows NextToken over the whole catalogue.
    pages = ec2.get_paginator("describe_instance_types").paginate(PaginationConfig={"PageSize": 5})
    paged = [t["InstanceType"] for p in pages for t in p["InstanceTypes"]]
    assert sorted(paged) == sorted(names) and len(paged) == len(names)

    assert code_of(ec2_once.describe_instance_types, InstanceTypes=["t3.micro", "x9.huge"]) == (
        "InvalidInstanceType", 400)
    assert code_of(ec2_once.describe_instance_types,
                   Filters=[{"Name": "no-such", "Values": ["1"]}])[0] == "InvalidParameterValue"

    out = aws.json("describe-instance-types", "--filters",
                   "Name=vcpu-info.default-vcpus,Values=16", "--query",
                   "InstanceTypes[].InstanceType")
    assert sorted(out) == ["c5.4xlarge", "m5.4xlarge", "r5.4xlarge"]


def _tags(n, start=0):
    return [{"Key": f"k{i}", "Value": "v"} for i in range(start, start + n)]


def test_tag_limits_and_errors(ec2, ec2_once, ec2_other, hello_ami, cleanup):
    out = ec2.run_instances(ImageId=hello_ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)
    iid = out["Instances"][0]["InstanceId"]
    cleanup.append(iid)

    assert code_of(ec2_once.create_tags, Resources=[iid], Tags=_tags(51)) == (
        "TagLimitExceeded", 400)
    assert code_of(ec2_once.run_instances, ImageId=hello_ami, InstanceType="t3.nano",
                   MinCount=1, MaxCount=1,
                   TagSpecifications=[{"ResourceType": "instance", "Tags": _tags(51)}])[0] == (
        "TagLimitExceeded")
    ec2.create_tags(Resources=[iid], Tags=_tags(50))
    assert code_of(ec2_once.create_tags, Resources=[iid], Tags=[{"Key": "one", "Value": "more"}])[0] == (
        "TagLimitExceeded")
    ec2.delete_tags(Resources=[iid])  # every user tag
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"] == []

    assert code_of(ec2_once.create_tags, Resources=[iid],
                   Tags=[{"Key": "k" * 129, "Value": "x"}])[0] == "InvalidParameterValue"
    assert code_of(ec2_once.create_tags, Resources=[iid],
                   Tags=[{"Key": "ok", "Value": "v" * 257}])[0] == "InvalidParameterValue"
    assert code_of(ec2_once.create_tags, Resources=[iid],
                   Tags=[{"Key": "aws:mine", "Value": "x"}])[0] == "InvalidParameterValue"
    assert code_of(ec2_once.create_tags, Resources=[], Tags=[{"Key": "a", "Value": "b"}]) == (
        "MissingParameter", 400)
    assert code_of(ec2_once.delete_tags, Resources=[]) == ("MissingParameter", 400)
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "k" * 128, "Value": "v" * 256},
                                            {"Key": "team", "Value": "blue"}])

    # DescribeTags filters.
    got = ec2.describe_tags(Filters=[{"Name": "resource-type", "Values": ["instance"]},
                                     {"Name": "key", "Values": ["team"]},
                                     {"Name": "value", "Values": ["bl*"]}])["Tags"]
    assert iid in [t["ResourceId"] for t in got]
    got = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]},
                                     {"Name": "tag:team", "Values": ["blue"]}])["Tags"]
    assert sorted(t["Key"] for t in got) == sorted(["k" * 128, "team"])

    # Another account neither sees nor changes them.
    other = ec2_other.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
    assert other == []
    assert code_of(ec2_other.delete_tags, Resources=[iid])[0] == "InvalidInstanceID.NotFound"
    assert len(ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]) == 2
