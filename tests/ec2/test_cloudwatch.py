"""CloudWatch (service `monitoring`) on the gateway's listener, with real
clients: aws-cli and boto3 speak the JSON protocol (current botocore picks
it from the model's `protocols`), and a boto3 client whose model is limited
to the Query protocol checks the form/XML path. The instance is a hello
guest booted with `nubis.burn=1` (image `hello-burn`, prepared by run.sh),
so its CPUUtilization is near 100 %.
"""

import datetime
import json
import os
import subprocess
import tempfile

import boto3
import botocore.exceptions
import botocore.session
import pytest

from conftest import NO_RETRY, _require, wait_until



def burn_min():
    """Lowest CPUUtilization accepted for the burner: 50 % of its vCPU, or
    half its fair share of the host when the host is overcommitted (a
    CPU-bound thread among `load` runnable ones on `ncpu` cores gets about
    ncpu/load of a core; CPUUtilization reports what the vCPU really got)."""
    load = max(os.getloadavg()[0], 1.0)
    return min(50.0, 50.0 * (os.cpu_count() or 1) / load)




def cw_client(endpoint, region, key=None, secret=None, query=False):
    bs = botocore.session.Session()
    if query:
        # A copy of CloudWatch's model that offers only the Query protocol,
        # found first on the data path (botocore's documented override).
        loader = bs.get_component("data_loader")
        model = loader.load_service_model("cloudwatch", "service-2")
        model["metadata"]["protocol"] = "query"
        model["metadata"]["protocols"] = ["query"]
        d = tempfile.mkdtemp(prefix="nbcw")
        path = os.path.join(d, "cloudwatch", model["metadata"]["apiVersion"])
        os.makedirs(path)
        with open(os.path.join(path, "service-2.json"), "w") as f:
            json.dump(model, f)
        bs = botocore.session.Session()
        bs.set_config_variable("data_path", d)
    kwargs = {"endpoint_url": endpoint, "region_name": region, "config": NO_RETRY}
    if key:
        kwargs.update(aws_access_key_id=key, aws_secret_access_key=secret)
    return boto3.Session(botocore_session=bs).client("cloudwatch", **kwargs)


@pytest.fixture(scope="module")
def cw(endpoint, region):
    return cw_client(endpoint, region)


@pytest.fixture(scope="module")
def cw_query(endpoint, region):
    c = cw_client(endpoint, region, query=True)
    assert c.meta.service_model.protocol == "query"
    return c


@pytest.fixture(scope="module")
def burner(ec2, endpoint, region):
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["hello-burn"]}])["Images"]
    assert len(images) == 1, "run.sh registers hello-burn: %r" % images
    r = ec2.run_instances(ImageId=images[0]["ImageId"], InstanceType="t3.nano", MinCount=1, MaxCount=1)
    iid = r["Instances"][0]["InstanceId"]
    try:
        wait_until(
            "burner running",
            lambda: ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
            == "running",
            timeout=300,
        )
        yield iid
    finally:
        ec2.terminate_instances(InstanceIds=[iid])


def window():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=10), now + datetime.timedelta(minutes=1)


def cpu_max(client, iid, stat="Average"):
    start, end = window()
    r = client.get_metric_statistics(
        Namespace="AWS/EC2",
        MetricName="CPUUtilization",
        Dimensions=[{"Name": "InstanceId", "Value": iid}],
        StartTime=start,
        EndTime=end,
        Period=60,
        Statistics=[stat],
    )
    vals = [d[stat] for d in r["Datapoints"]]
    for d in r["Datapoints"]:
        assert d["Unit"] == "Percent"
        assert isinstance(d["Timestamp"], datetime.datetime)
    return max(vals) if vals else None


def test_boto3_json_get_metric_statistics(cw, burner):
    got = wait_until("CPUUtilization of the burner", lambda: (cpu_max(cw, burner) or 0) >= burn_min() and cpu_max(cw, burner), timeout=120, delay=3)
    assert burn_min() <= got <= 100.0


def test_boto3_query_protocol(cw_query, cw, burner):
    wait_until("burner sampled", lambda: (cpu_max(cw, burner) or 0) >= burn_min(), timeout=120, delay=3)
    assert cpu_max(cw_query, burner, "Maximum") >= burn_min()
    start, end = window()
    r = cw_query.get_metric_data(
        MetricDataQueries=[{"Id": "cpu", "MetricStat": {"Metric": {"Namespace": "AWS/EC2",
            "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": burner}]},
            "Period": 60, "Stat": "Maximum"}}],
        StartTime=start,
        EndTime=end,
    )
    res = r["MetricDataResults"][0]
    assert res["Id"] == "cpu" and res["StatusCode"] == "Complete"
    assert max(res["Values"]) >= burn_min()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cw_query.get_metric_statistics(Namespace="AWS/EC2", MetricName="CPUUtilization",
            StartTime=end, EndTime=start, Period=60, Statistics=["Average"])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


def aws_cw(endpoint, *args):
    cmd = ["aws", "--endpoint-url", endpoint, "--output", "json", "cloudwatch", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return p


def test_aws_cli_get_metric_statistics_and_data(endpoint, cw, burner):
    wait_until("burner sampled", lambda: (cpu_max(cw, burner) or 0) >= burn_min(), timeout=120, delay=3)
    start, end = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in window()]
    p = aws_cw(endpoint, "get-metric-statistics", "--namespace", "AWS/EC2", "--metric-name", "CPUUtilization",
               "--dimensions", f"Name=InstanceId,Value={burner}", "--start-time", start, "--end-time", end,
               "--period", "60", "--statistics", "Average", "Maximum")
    assert p.returncode == 0, p.stderr
    dps = json.loads(p.stdout)["Datapoints"]
    assert max(d["Maximum"] for d in dps) >= burn_min(), dps
    queries = json.dumps([{"Id": "cpu", "MetricStat": {"Metric": {"Namespace": "AWS/EC2",
        "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": burner}]},
        "Period": 60, "Stat": "Average"}}])
    p = aws_cw(endpoint, "get-metric-data", "--metric-data-queries", queries, "--start-time", start, "--end-time", end)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)["MetricDataResults"]
    assert res[0]["Id"] == "cpu" and max(res[0]["Values"]) >= burn_min(), res
    p = aws_cw(endpoint, "list-metrics", "--namespace", "AWS/EC2", "--dimensions", f"Name=InstanceId,Value={burner}")
    assert p.returncode == 0, p.stderr
    names = {m["MetricName"] for m in json.loads(p.stdout)["Metrics"]}
    assert {"CPUUtilization", "NetworkIn", "DiskReadOps", "StatusCheckFailed"} <= names


def test_bad_input_gets_cloudwatch_codes(cw, burner):
    start, end = window()
    dims = [{"Name": "InstanceId", "Value": burner}]

    def code(**kw):
        args = dict(Namespace="AWS/EC2", MetricName="CPUUtilization", Dimensions=dims,
                    StartTime=start, EndTime=end, Period=60, Statistics=["Average"])
        args.update(kw)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            cw.get_metric_statistics(**args)
        return e.value.response["Error"]["Code"]

    assert code(StartTime=end, EndTime=start) == "InvalidParameterValue"
    assert code(Period=90) == "InvalidParameterValue"
    assert code(MetricName="MemoryUtilization") == "InvalidParameterValue"
    assert code(ExtendedStatistics=["p99"]) == "InvalidParameterCombination"
    q = {"MetricStat": {"Metric": {"Namespace": "AWS/EC2", "MetricName": "CPUUtilization", "Dimensions": dims},
         "Period": 60, "Stat": "Average"}}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cw.get_metric_data(MetricDataQueries=[dict(q, Id=f"q{i}") for i in range(501)], StartTime=start, EndTime=end)
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_other_tenant_sees_nothing(endpoint, region, cw, burner):
    wait_until("burner sampled", lambda: cpu_max(cw, burner) is not None, timeout=120, delay=3)
    other = cw_client(endpoint, region, _require("NUBIS_EC2_OTHER_KEY"), _require("NUBIS_EC2_OTHER_SECRET"))
    assert cpu_max(other, burner) is None
    listed = other.list_metrics(Namespace="AWS/EC2")["Metrics"]
    assert all(d["Value"] != burner for m in listed for d in m["Dimensions"])
